"""The report's figures (matplotlib, Agg): PNG and SVG of each, drawn by FigurePool.

Each figure is registered once, by `@figure(...)` on its draw function (analysis.figreg says
what the registration carries); that is the only place to add one. The tasks, the workers'
order and the report's placement are derived from the registry (a cost is about one task's
drawing time in tenths of a second on the tests' synthetic sweep). Here:

- jct_vs_jps: average JCT against JPS, log scale, a panel per GPU x DRAM (seed 2.1, 2.2)
- tlast_t1: T<last>/T1 against JPS, a panel per GPU x DRAM (seed 3.5)
- why: hit rate, cached tokens, preemptions, offload bytes, KV usage against JPS
- validity: every cell's state
- per_turn, cached_per_turn, kv_usage (one per DRAM size): in figures_turns
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from analysis import figures_turns, plotkit, reference, style
from analysis.figreg import FIGURES, figure
from analysis.load import KEYS
from analysis.pipeline import Results
from analysis.plotkit import FigureFile

log = logging.getLogger(__name__)


def _panel_title(gpu: str, dram: int) -> str:
    return f"{style.gpu_label(gpu)} — {dram} GB DRAM"


def _x_axis(ax: plt.Axes, xpos: dict[float, int]) -> None:
    ax.set_xticks(list(xpos.values()), [f"JPS={style.jps_label(j)}" for j in xpos])
    ax.set_xlim(-0.4, len(xpos) - 0.6)


def _draw_metric(ax: plt.Axes, cells: pd.DataFrame, values: pd.DataFrame, col: str,
                 xpos: dict[float, int], lo: str | None = None, hi: str | None = None,
                 ls_override: str | None = None, label_suffix: str = "") -> bool:
    """One line per (sweep, policy, sched) of values[col] against JPS; invalid cells as
    marks. Returns whether something was drawn."""
    sweeps = sorted(cells["sweep"].unique())
    merged = cells.merge(values, on=KEYS, how="left")
    drawn = False
    for slot, (s, ser, rows) in enumerate(plotkit.lines(merged)):
        rows = rows.sort_values("jps")
        color = ser.color
        x = rows["jps"].map(xpos).to_numpy(float)
        y = rows[col].where(rows["valid"]).to_numpy(float)
        look = plotkit.line_style(ser, sweeps, s)
        if ls_override:
            look["ls"] = ls_override
        kw: dict[str, Any] = {"color": color, "marker": ser.marker, "ls": look.pop("ls"),
                              "ms": 6, "label": ser.label + label_suffix, **look}
        if lo and hi and np.isfinite(y).any():
            err = np.vstack([y - rows[lo].to_numpy(float), rows[hi].to_numpy(float) - y])
            ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), capsize=3, **kw)
        else:
            ax.plot(x, y, **kw)
        drawn |= bool(np.isfinite(y).any())
        unf = rows["state"].eq("unfinished").to_numpy() & np.isfinite(y)
        if unf.any():
            ax.plot(x[unf], y[unf], ls="none", marker=ser.marker, ms=6, mfc="white",
                    mec=color, zorder=4)
        for xi, (_, r) in zip(x, rows.iterrows(), strict=True):
            if not r["valid"]:
                plotkit.mark_invalid(ax, float(xi), r["state"], color, slot,
                                     plotkit.cell_tag(ser, s, len(sweeps) > 1))
    return drawn


def _seed_points(ax: plt.Axes, ref: pd.DataFrame, gpu: str, dram: int, cells: pd.DataFrame,
                 xpos: dict[float, int]) -> bool:
    """The seed's quoted mean JCTs as stars; labels alternate above/below when stacked."""
    seed_policies = reference.seed_policies(cells)
    pts = [(xpos[j], r["value_lo"], r["policy"])
           for r in ref[ref["metric"] == "mean_jct_s"].to_dict("records")
           for j in xpos if r["policy"] in seed_policies
           and reference.matches(r, gpu, dram, r["policy"], j)]
    for k, (x, v, p) in enumerate(sorted(pts, key=lambda t: (t[0], -t[1]))):
        ax.plot(x, v, marker="*", ms=14, ls="none", mfc=style.policy_color(p), mec="black",
                zorder=6)
        ax.annotate(f"seed {v:g} s", (x, v), textcoords="offset points",
                    xytext=(9, 2 if k % 2 == 0 else -9), fontsize=7)
    return bool(pts)


def _subtitle(res: Results, cells: pd.DataFrame) -> str:
    text = plotkit.n_text(cells, res.options.window.is_all)
    if not res.options.window.is_all:
        text += f" — window: {res.options.window.describe()}"
    return text


@figure(name="jct_vs_jps", cost=7.5, section="jct", order=10)
def jct_vs_jps(res: Results, out: Path) -> FigureFile:
    cells = res.cells
    panels = plotkit.gpu_dram_panels(cells)
    xpos = plotkit.positions(cells["jps"])
    fig, axes = plotkit.wrap_grid(len(panels))
    extras = {"invalid"} if (~cells["valid"]).any() else set()
    extras |= {"unfinished"} if cells["state"].eq("unfinished").any() else set()
    for ax, (g, d) in zip(axes, panels, strict=True):
        sub = cells[(cells["gpu"] == g) & (cells["dram"] == d)]
        _draw_metric(ax, sub, res.jct, "mean_jct_s", xpos, "ci_lo_s", "ci_hi_s")
        if _seed_points(ax, res.reference, g, d, sub, xpos):
            extras.add("seed")
        plotkit.log_seconds(ax)
        ax.set_ylabel("Avg JCT (log scale)")
        _x_axis(ax, xpos)
        ax.set_title(_panel_title(g, d) + " — Avg JCT vs JPS")
    plotkit.legend(fig, cells, ["ci", *sorted(extras)])
    subtitle = _subtitle(res, cells)
    plotkit.finish(fig, "Average job completion time against load", subtitle)
    caption = (f"Mean JCT over jobs that finished ok ({res.options.window.describe()}); bars: "
               f"{res.options.level:.0%} bootstrap CI over jobs. {subtitle}. Stars: the seed's "
               "quoted values where the same cell exists.")
    return plotkit.save(fig, out, "jct_vs_jps", "Avg JCT vs JPS", caption)


def _seed_ratio(ax: plt.Axes, ref: pd.DataFrame, gpu: str, dram: int, cells: pd.DataFrame,
                xpos: dict[float, int]) -> bool:
    rows = ref[ref["metric"] == "tlast_over_t1"]
    hit = False
    policies = style.policy_order(reference.seed_policies(cells))
    for _, r in rows.iterrows():
        for j in xpos:
            if r["policy"] not in policies or not reference.matches(r, gpu, dram, r["policy"], j):
                continue
            x = xpos[j] + 0.12 * (policies.index(r["policy"]) - 1)
            c = style.policy_color(r["policy"])
            lo, hi = r["value_lo"], r["value_hi"]
            if math.isnan(lo):
                ax.plot(x, hi, marker="v", ms=8, color=c, alpha=0.5, ls="none")
            else:
                top = hi if not math.isnan(hi) else lo
                ax.vlines(x, lo, top, color=c, lw=7, alpha=0.3)
            hit = True
    return hit


@figure(name="tlast_t1", cost=7, section="tlast", order=30)
def tlast_t1(res: Results, out: Path) -> FigureFile:
    cells = res.cells
    panels = plotkit.gpu_dram_panels(cells)
    xpos = plotkit.positions(cells["jps"])
    n_t = sorted(set(res.ratio["n_turns"])) or [0]
    label = f"T{n_t[0]}/T1" if len(n_t) == 1 else "T(last)/T1"
    fig, axes = plotkit.wrap_grid(len(panels))
    extras = {"invalid"} if (~cells["valid"]).any() else set()
    for ax, (g, d) in zip(axes, panels, strict=True):
        sub = cells[(cells["gpu"] == g) & (cells["dram"] == d)]
        _draw_metric(ax, sub, res.ratio, "tlast_over_t1", xpos)
        if _seed_ratio(ax, res.reference, g, d, sub, xpos):
            extras.add("seed_band")
        ax.axhline(1.0, color="#666", lw=0.8, ls=":")
        plotkit.log_seconds(ax, "×")
        ax.set_ylabel(f"{label} (log scale)")
        _x_axis(ax, xpos)
        ax.set_title(_panel_title(g, d) + f" — {label}")
    plotkit.legend(fig, cells, sorted(extras))
    subtitle = _subtitle(res, cells)
    plotkit.finish(fig, f"{label}: last-turn over first-turn latency", subtitle)
    caption = (f"Mean latency of the last turn over the first (ok turns, "
               f"{res.options.window.describe()}); above 1: later turns slower. {subtitle}. "
               "Bars/triangles: the seed's §3.5 ranges/bounds.")
    return plotkit.save(fig, out, "tlast_t1", f"{label} vs JPS", caption)


WHY_ROWS = [  # column(s), y label, scale
    (("prefix_hit_rate",), "prefix-cache hit rate\n(hits / prompt tokens)", 100.0, "%"),
    (("cached_frac",), "cached prompt tokens\n(of prompt tokens, per request)", 100.0, "%"),
    (("preemptions",), "preemptions", 1.0, ""),
    (("bytes_offload", "bytes_onload"), "offload (—) / onload (- -)\nGB", 1e-9, " GB"),
    (("kv_usage_mean",), "KV-cache usage\n(mean over the cell)", 100.0, "%"),
]


@figure(name="why", cost=23, section="why", order=40)
def why(res: Results, out: Path) -> FigureFile:
    cells = res.cells
    panels = plotkit.gpu_dram_panels(cells)
    xpos = plotkit.positions(cells["jps"])
    rows = [r for r in WHY_ROWS if any(c in res.why and res.why[c].notna().any() for c in r[0])]
    absent = [r[1].split("\n")[0] for r in WHY_ROWS if r not in rows]
    fig, axs = plotkit.grid(max(len(rows), 1), len(panels), panel_w=3.6, panel_h=2.2,
                            left=1.25, hgap=0.3, sharex="col")
    extras = {"invalid"} if (~cells["valid"]).any() else set()
    orders = plotkit.scheds(cells).nunique() > 1
    for i, (cols, ylabel, scale, unit) in enumerate(rows):
        for k, (g, d) in enumerate(panels):
            ax = axs[i][k]
            sub = cells[(cells["gpu"] == g) & (cells["dram"] == d)]
            pair = len([c for c in cols if c in res.why]) > 1
            for n, c in enumerate(c for c in cols if c in res.why):
                vals = res.why[KEYS + [c]].assign(**{c: res.why[c] * scale})
                # offload (—) / onload (- -): there the line style is the direction, so a
                # report with several orders tells them by the marker fill alone
                ls = "--" if n else ("-" if orders and pair else None)
                _draw_metric(ax, sub, vals, c, xpos, ls_override=ls)
            _x_axis(ax, xpos)
            if unit:
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p, u=unit: f"{v:g}{u}"))
            if k == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(_panel_title(g, d))
    plotkit.legend(fig, cells, sorted(extras))
    subtitle = _subtitle(res, cells)
    plotkit.finish(fig, "Why: cache hits, preemptions, offload traffic, KV usage", subtitle)
    caption = ("Server counters are increases over the whole cell; the hit rate divides "
               "vllm:prefix_cache_hits by the prompt tokens sent (not by queries). "
               f"{subtitle}." + (f" Not reported by these sweeps: {', '.join(absent)}." if absent
                            else ""))
    if orders:
        caption += (" In the offload row the line style is the direction; the scheduling "
                    "order shows by the marker fill (half filled: not the engine's order).")
    return plotkit.save(fig, out, "why", "Why (per cell)", caption)


@figure(name="validity", cost=4, section="validity", order=70)
def validity(res: Results, out: Path) -> FigureFile:
    cells = res.cells.copy()
    order = plotkit.series_of(cells)
    sers = [style.Series(p, o) for p, o in zip(cells["policy"], plotkit.scheds(cells),
                                               strict=True)]
    cells = cells.assign(
        _g=[plotkit.gpu_key(g) for g in cells["gpu"]], _d=-cells["dram"],
        _p=[order.index(ser) for ser in sers],
        row=[f"{s} · {style.gpu_label(g)} · {d} GB · {ser.label}"
             for s, g, d, ser in zip(cells["sweep"], cells["gpu"], cells["dram"], sers,
                                     strict=True)]).sort_values(["sweep", "_d", "_g", "_p"])
    rows = list(dict.fromkeys(cells["row"]))
    xpos = plotkit.positions(cells["jps"])
    fig, axes = plotkit.grid(1, 1, panel_w=1.0 * len(xpos), panel_h=0.36 * len(rows),
                             left=0.3 + 0.052 * max(map(len, rows)), bottom=0.45, top=0.75)
    ax = axes[0][0]
    for _, r in cells.iterrows():
        y = rows.index(r["row"])
        ax.add_patch(plt.Rectangle((xpos[r["jps"]] - 0.5, y - 0.5), 1, 1,
                                   fc=style.STATE_COLORS.get(r["state"], "#fff"), ec="white"))
        jobs = f"\n{r['jobs_ok']}/{r['jobs_expected']}" if r["folder"] and r["jobs_rows"] else ""
        ax.text(xpos[r["jps"]], y, style.STATE_SHORT.get(r["state"], r["state"]) + jobs,
                ha="center", va="center", fontsize=6.5)
    ax.set_xlim(-0.5, len(xpos) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(list(xpos.values()), [f"JPS={style.jps_label(j)}" for j in xpos])
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.grid(False)
    sub = plotkit.n_text(res.cells)
    plotkit.finish(fig, "Cell validity (state, jobs ok / N)", sub)
    caption = ("Every cell of the sweeps (those the matrix names included). Green: ok; "
               "yellow: no DONE marker (provisional); red: invalid (not drawn); grey: missing.")
    return plotkit.save(fig, out, "validity", "Cell validity", caption)


def _tasks(res: Results) -> list[tuple[str, int | None]]:
    """(figure, DRAM size or None) in report order: one task per DRAM size of a per_dram one."""
    drams = figures_turns.drams(res)
    return [(f.name, d) for f in FIGURES for d in (drams if f.per_dram else [None])]


def draw_one(res: Results, out: Path, name: str, dram: int | None) -> list[FigureFile]:
    return FIGURES[name].run(res, out, dram)


def by_cost(tasks: list[tuple[str, int | None]]) -> list[tuple[str, int | None]]:
    """Most costly first, so that the workers end together (ties keep the report order)."""
    return sorted(tasks, key=lambda t: -FIGURES[t[0]].cost)


def _warm() -> None:
    """Runs in a worker so that its imports happen while the parent computes."""


FORK_SAFE_THREADS = 3  # the main thread plus the idle ones numpy and pyarrow start at import


def _threads() -> int:
    """Native threads of this process (pyarrow's pools are invisible to `threading`)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2


class FigurePool:
    """Draws the figures, in `workers` processes or in this one when workers <= 1. Start it
    before reading the sweep: a process that is still single-threaded is forked (the workers
    then start at once with everything imported); one that already runs threads (pyarrow's
    pools) spawns fresh workers instead, which import matplotlib while the parent computes."""

    def __init__(self, workers: int = 1) -> None:
        self.ex: ProcessPoolExecutor | None = None
        if workers > 1:
            method = "fork" if _threads() <= FORK_SAFE_THREADS else "spawn"
            log.debug("figure workers: %d, started by %s", workers, method)
            self.ex = ProcessPoolExecutor(workers, mp_context=mp.get_context(method))
            for _ in range(workers):
                self.ex.submit(_warm)

    def draw_all(self, res: Results, out: Path) -> list[FigureFile]:
        tasks = _tasks(res)
        if self.ex is None:
            figs = [f for t in tasks for f in draw_one(res, out, *t)]
        else:
            futures = {t: self.ex.submit(draw_one, res, out, *t) for t in by_cost(tasks)}
            figs = [f for t in tasks for f in futures[t].result()]
        log.info("drew %d figures in %s", len(figs), out)
        return figs

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown()

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def draw_all(res: Results, out: Path, workers: int = 1) -> list[FigureFile]:
    with FigurePool(workers) as pool:
        return pool.draw_all(res, out)
