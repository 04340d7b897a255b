"""Shared pieces of the figures: saving (PNG + SVG, atomically), panel grids, the N/seed/window
caption every figure carries, invalid-cell marks and the legend."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis import style  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none",  # text stays text: smaller files, searchable in the HTML
    "svg.hashsalt": "kvbench",  # stable ids, reproducible files
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "axes.grid.axis": "y",  # x is categorical (JPS, turn); fewer lines to draw
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
})
GPU_ORDER = ["h200", "h100", "a100", "l40s", "rtx5090", "cpu"]
DPI = 100


@dataclass(frozen=True)
class FigureFile:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    figure: str = ""  # the registered figure that drew it (analysis.figreg); "" when none


def save(fig: plt.Figure, out: Path, name: str, title: str, caption: str) -> FigureFile:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        final = out / f"{name}.{ext}"
        tmp = out / f".{name}.tmp.{ext}"
        if ext == "png":  # fast zlib level: encoding was a tenth of the drawing time
            fig.savefig(tmp, dpi=DPI, format=ext, pil_kwargs={"compress_level": 1})
        else:
            fig.savefig(tmp, format=ext, metadata={"Date": None})
        os.replace(tmp, final)
        paths[ext] = final
    plt.close(fig)
    return FigureFile(name, title, caption, paths["png"], paths["svg"])


def gpu_key(g: str) -> tuple[int, str]:
    return (GPU_ORDER.index(g) if g in GPU_ORDER else len(GPU_ORDER), g)


def gpu_dram_panels(cells: pd.DataFrame) -> list[tuple[str, int]]:
    """(gpu, dram) pairs, large DRAM first, GPUs in the seed's order (H200 left of H100)."""
    pairs = {(g, int(d)) for g, d in zip(cells["gpu"], cells["dram"], strict=True)}
    return sorted(pairs, key=lambda p: (-p[1], gpu_key(p[0])))


def grid(nrows: int, ncols: int, panel_w: float = 4.2, panel_h: float = 2.9, n: int | None = None,
         left: float = 0.85, bottom: float = 1.15, top: float = 0.95, wgap: float = 0.8,
         hgap: float = 0.7, sharex: bool | Literal["col", "row", "all", "none"] = False
         ) -> tuple[plt.Figure, np.ndarray]:
    """A figure of nrows x ncols panels of fixed size in inches, margins in inches (no
    tight_layout: text extents are costly to measure and the layout is known in advance).
    Panels past n are hidden. With sharex, only the bottom row labels its x ticks (tick
    labels are most of a panel's drawing time)."""
    width = left + ncols * panel_w + (ncols - 1) * wgap + 0.3
    height = top + nrows * panel_h + (nrows - 1) * hgap + bottom
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             sharex=sharex)
    if sharex:
        for ax in axes[:-1].ravel():
            ax.tick_params(labelbottom=False)
    fig.subplots_adjust(left=left / width, right=1 - 0.3 / width, top=1 - top / height,
                        bottom=bottom / height, wspace=wgap / panel_w, hspace=hgap / panel_h)
    for ax in list(axes.ravel())[n if n is not None else nrows * ncols:]:
        ax.set_visible(False)
    return fig, axes


def wrap_grid(n: int, **kw: Any) -> tuple[plt.Figure, list[plt.Axes]]:
    ncols = max(1, min(wrap_cols(n), n))
    fig, axes = grid(math.ceil(n / ncols), ncols, n=n, **kw)
    return fig, list(axes.ravel())[:n]


def wrap_cols(n: int) -> int:
    return 2 if n <= 4 else 3 if n <= 9 else 4


def n_text(cells: pd.DataFrame, window_all: bool = True) -> str:
    """'N = 150 jobs/cell, seed 42' for the cells drawn; says so loudly when N or seed differ."""
    c = cells[cells["folder"]] if "folder" in cells else cells
    ns = sorted({int(v) for v in c.get("jobs_expected", pd.Series(dtype=float)).dropna()})
    seeds = sorted({int(v) for v in c.get("seed", pd.Series(dtype=float)).dropna()})
    if not ns:
        text = "N = ? jobs/cell"
    elif len(ns) == 1:
        text = f"N = {ns[0]} jobs/cell"
    else:
        text = f"N = {ns[0]}–{ns[-1]} jobs/cell (N DIFFERS: not comparable)"
    if seeds:
        text += f", seed {seeds[0]}" if len(seeds) == 1 else \
            f", seeds {','.join(map(str, seeds))} (DIFFER)"
    if not window_all and "n_used" in c and c["n_used"].notna().any():
        u = c["n_used"].dropna().astype(int)
        text += f"; {u.min()}–{u.max()} in window" if u.min() != u.max() else \
            f"; {u.min()} in window"
    return text


def scheds(cells: pd.DataFrame) -> pd.Series:
    """The cells' scheduling order (the default order where a frame has no sched column)."""
    if "sched" in cells:
        return cells["sched"]
    return pd.Series(style.DEFAULT_SCHED, index=cells.index, dtype=object)


def series_of(cells: pd.DataFrame) -> list[style.Series]:
    """The series (policy, scheduling order) of the cells, in legend order."""
    return style.series_order(zip(cells["policy"], scheds(cells), strict=True))


def lines(cells: pd.DataFrame) -> Iterable[tuple[str, style.Series, pd.DataFrame]]:
    """(sweep, series, rows) in legend order: one line per sweep and (policy, sched)."""
    sched = scheds(cells)
    for ser in series_of(cells):
        mine = (cells["policy"] == ser.policy) & (sched == ser.sched)
        for s in sorted(cells.loc[mine, "sweep"].unique()):
            yield s, ser, cells[mine & (cells["sweep"] == s)]


def sweep_style(sweeps: list[str], sweep: str) -> str:
    return style.SWEEP_LINESTYLES[sorted(sweeps).index(sweep) % len(style.SWEEP_LINESTYLES)]


def line_style(ser: style.Series, sweeps: list[str], sweep: str) -> dict[str, Any]:
    """Keywords of one line: with several sweeps in a panel the line style names the sweep,
    else the scheduling order; a marker of another order than the default is half filled.
    The default order's line gets exactly the keywords it had before the sched axis."""
    ls = sweep_style(sweeps, sweep) if len(sweeps) > 1 or ser.default else ser.linestyle
    return {"ls": ls, **ser.fill()}


def cell_tag(ser: style.Series, sweep: str, several_sweeps: bool) -> str:
    """What tells a cell's line from the others of its colour: its order, its sweep."""
    return " · ".join(t for t in (ser.tag, sweep if several_sweeps else "") if t)


def mark_invalid(ax: plt.Axes, x: float, state: str, color: str, slot: int,
                 tag: str = "") -> None:
    """A cell that has no number: its state written at the bottom of the panel, never a point
    (with a tag, cell_tag, when its colour does not say which line it is: its scheduling
    order, its sweep's name when several sweeps share the panel)."""
    text = f"✕ {style.STATE_SHORT.get(state, state)}" + (f" · {tag}" if tag else "")
    ax.annotate(text, (x, 0.03 + 0.075 * slot),
                xycoords=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                color=color, fontweight="bold",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": color, "lw": 0.6})


def invalid_box(ax: plt.Axes, cells: pd.DataFrame) -> None:
    """List the panel's invalid cells in a corner box (for panels whose x is not the cell)."""
    bad = cells[~cells["valid"]]
    if bad.empty:
        return
    several = cells["sweep"].nunique() > 1
    text = "\n".join(f"✕ {style.series_label(p, o)}{f' · {s}' if several else ''}: "
                      f"{style.STATE_SHORT.get(st, st)}"
                      for p, o, s, st in zip(bad["policy"], scheds(bad), bad["sweep"],
                                             bad["state"], strict=True))
    ax.text(0.02, 0.97, text + "\n(not drawn)", transform=ax.transAxes, va="top", ha="left",
            fontsize=7, color="#a00",
            bbox={"boxstyle": "round,pad=0.3", "fc": "#fff5f5", "ec": "#a00", "lw": 0.6})


def legend(fig: plt.Figure, cells: pd.DataFrame, extras: Iterable[str] = ()) -> None:
    """One legend under the panels: series (policy: colour and marker; scheduling order: line
    style and marker fill), sweeps (line style), marks used."""
    sweeps = sorted(cells["sweep"].unique())
    handles: list[Artist] = [
        Line2D([], [], color=ser.color, marker=ser.marker, label=ser.label) if ser.default
        else Line2D([], [], color=ser.color, marker=ser.marker, label=ser.label,
                    ls="-" if len(sweeps) > 1 else ser.linestyle, **ser.fill())
        for ser in series_of(cells)]
    if len(sweeps) > 1:
        handles += [Line2D([], [], color="#444", ls=sweep_style(sweeps, s), label=s)
                    for s in sweeps]
    marks: dict[str, Artist] = {
        "seed": Line2D([], [], color="#444", marker="*", ms=12, mfc="#ddd", mec="black",
                       ls="none", label="seed value (research update)"),
        "seed_band": plt.Rectangle((0, 0), 1, 1, fc="#999", alpha=0.3,
                                   label="seed range (research update)"),
        "unfinished": Line2D([], [], color="#444", marker="o", mfc="white", ls="none",
                             label="no DONE marker (provisional)"),
        "invalid": Line2D([], [], color="#a00", marker="$✕$", ls="none",
                          label="invalid/missing cell (not drawn)"),
        "ci": Line2D([], [], color="#444", marker="|", ms=10, ls="none",
                     label="bootstrap CI of the mean"),
    }
    handles += [marks[e] for e in extras if e in marks]
    width, height = fig.get_size_inches()
    ncol = max(1, min(len(handles), int(width / 2.3)))
    rows = math.ceil(len(handles) / ncol)
    _ensure_bottom(fig, 0.5 + 0.24 * rows)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 0.04 / fig.get_figheight()))


def _ensure_bottom(fig: plt.Figure, need: float) -> None:
    """Grow the figure at the bottom until `need` inches lie under the panels (keeps the
    panels' size and the top margin)."""
    width, height = fig.get_size_inches()
    sp = fig.subplotpars
    top_in, bottom_in = (1 - sp.top) * height, sp.bottom * height
    if need <= bottom_in:
        return
    new = height + need - bottom_in
    fig.set_size_inches(width, new)
    fig.subplots_adjust(top=1 - top_in / new, bottom=need / new)


def seconds(v: float, _pos: object = None) -> str:
    return f"{v:g} s"


def log_seconds(ax: plt.Axes, unit: str = " s") -> None:
    """Log y axis with ticks at 1-2-5 steps, labelled in plain numbers (no 10^x)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}{unit}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def finish(fig: plt.Figure, title: str, subtitle: str) -> None:
    height = fig.get_figheight()
    fig.suptitle(f"{title}\n{subtitle}", fontsize=11, y=1 - 0.12 / height, va="top")


def positions(values: Iterable[float]) -> dict[float, int]:
    return {v: i for i, v in enumerate(sorted(set(values)))}


def finite(a: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(a), dtype=float)
    return x[np.isfinite(x)]
