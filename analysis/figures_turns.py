"""Figures with a panel per GPU and JPS, one figure per DRAM size (seed section 3):
per-turn latency, cached prompt tokens per turn, KV-cache usage over time. Each is registered
by its `@figure(..., per_dram=True)` (see analysis.figreg): drawn once per DRAM size, as
`<name>_dram<D>`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis import plotkit, reference, style
from analysis.figreg import figure
from analysis.load import KEYS
from analysis.pipeline import Results
from analysis.plotkit import FigureFile

OFF_SCALE = 2.5  # a seed value this many times above our panel's top is written, not drawn

PanelFn = Callable[[plt.Axes, pd.DataFrame, str, int, float], set[str]]


def _layout(res: Results, dram: int) -> tuple[list[str], list[float], pd.DataFrame]:
    cells = res.cells[res.cells["dram"] == dram]
    gpus = sorted(cells["gpu"].unique(), key=plotkit.gpu_key)
    return gpus, sorted(cells["jps"].unique()), cells


def drams(res: Results) -> list[int]:
    return sorted((int(d) for d in res.cells["dram"].unique()), reverse=True)


def _by_dram(res: Results, out: Path, name: str, title: str, caption: str, ylabel: str,
             draw: PanelFn, only: int | None, sharex: bool = True, xlabel: str = "turn"
             ) -> list[FigureFile]:
    figs = []
    for dram in drams(res) if only is None else [only]:
        gpus, jpss, cells = _layout(res, dram)
        fig, axs = plotkit.grid(len(jpss), len(gpus), panel_w=4.4, panel_h=2.5,
                                hgap=0.45 if sharex else 0.6, sharex="col" if sharex else False)
        extras: set[str] = {"invalid"} if (~cells["valid"]).any() else set()
        for i, j in enumerate(jpss):
            for k, g in enumerate(gpus):
                ax = axs[i][k]
                sub = cells[(cells["gpu"] == g) & (cells["jps"] == j)]
                extras |= draw(ax, sub, g, dram, j)
                if not ax.lines:
                    ax.text(0.5, 0.5, "no valid cell", transform=ax.transAxes, ha="center",
                            va="center", color="#888")
                    ax.set_yticks([])
                plotkit.invalid_box(ax, sub)
                ax.set_title(f"{style.gpu_label(g)} — JPS={style.jps_label(j)}")
                if k == 0:
                    ax.set_ylabel(ylabel)
                if i == len(jpss) - 1:
                    ax.set_xlabel(xlabel)
        plotkit.legend(fig, cells, sorted(extras))
        sub_text = plotkit.n_text(cells, res.options.window.is_all)
        if not res.options.window.is_all:
            sub_text += f" — window: {res.options.window.describe()}"
        plotkit.finish(fig, f"{title} — {dram} GB DRAM", sub_text)
        figs.append(plotkit.save(fig, out, f"{name}_dram{dram}", f"{title} — {dram} GB DRAM",
                                 f"{caption} {sub_text}."))
    return figs


def by_cell(values: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """values split per cell once per figure (a merge per line costs more than the line)."""
    return {k: g.sort_values("turn") if "turn" in g else g
            for k, g in values.groupby(KEYS, sort=False)}


def _turn_lines(ax: plt.Axes, cells: pd.DataFrame, values: dict[tuple, pd.DataFrame], col: str,
                scale: float = 1.0) -> float:
    """Lines per (sweep, policy, sched) of values[col] against the turn; returns the top
    value."""
    sweeps = sorted(cells["sweep"].unique())
    top, tmax = 0.0, 0
    for s, ser, rows in plotkit.lines(cells[cells["valid"]]):
        look = plotkit.line_style(ser, sweeps, s)
        for r in rows.to_dict("records"):
            v = values.get(tuple(r[k] for k in KEYS))
            if v is None or v.empty:
                continue
            tmax = max(tmax, int(v["turn"].max()))
            y = v[col].to_numpy(float) * scale
            ax.plot(v["turn"], y, color=ser.color, marker=ser.marker, ms=4,
                    mfc="white" if r["state"] == "unfinished" else None, **look)
            top = max(top, float(np.nanmax(y)) if np.isfinite(y).any() else 0.0)
    n = _n_turns(cells) or tmax or 8
    ax.set_xticks(range(1, n + 1), [f"T{t}" for t in range(1, n + 1)])
    ax.set_xlim(0.6, n + 0.4)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    return top


def _n_turns(cells: pd.DataFrame) -> int:
    n = pd.to_numeric(cells.get("n_turns_spec"), errors="coerce").max()
    return int(n) if pd.notna(n) and n > 0 else 0


def _seed_turns(ax: plt.Axes, ref: pd.DataFrame, cells: pd.DataFrame, gpu: str, dram: int,
                jps: float, top: float, n_turns: int) -> bool:
    rows = ref[ref["metric"].isin(["turn_latency_s", "turn_latency_peak_s"])]
    notes, hit = [], False
    seed_policies = reference.seed_policies(cells)
    for _, r in rows.iterrows():
        if r["policy"] not in seed_policies or not reference.matches(
                r, gpu, dram, r["policy"], jps):
            continue
        c = style.policy_color(r["policy"])
        lo, hi = r["value_lo"], r["value_hi"]
        t0 = r["turn_lo"] if not math.isnan(r["turn_lo"]) else 1
        t1 = r["turn_hi"] if not math.isnan(r["turn_hi"]) else n_turns
        span = "peak" if r["metric"] == "turn_latency_peak_s" else (
            f"T{t0:g}" if t0 == t1 else f"T{t0:g}–T{t1:g}")
        text = f"seed {style.policy_label(r['policy'])} {span}: {reference.seed_text(r)}"
        if top and max(v for v in (lo, hi) if not math.isnan(v)) > OFF_SCALE * top:
            notes.append(text + " (off scale)")
            continue
        if math.isnan(lo):
            ax.hlines(hi, t0 - 0.3, t1 + 0.3, colors=c, linestyles="--", lw=1.2, alpha=0.7)
        elif lo == hi:
            ax.plot([t0, t1] if t0 != t1 else [t0], [lo] * (2 if t0 != t1 else 1), marker="*",
                    ms=12, mfc=c, mec="black", ls=":", color=c, zorder=6)
        else:
            ax.fill_between([t0 - 0.3, t1 + 0.3], lo, hi, color=c, alpha=0.15,
                            hatch="//" if r["approx"] else None, lw=0)
        hit = True
    if notes:
        ax.text(0.98, 0.03, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=6.5, color="#444", zorder=7,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#ccc", "alpha": 0.85})
    return hit


@figure(name="per_turn", cost=9, section="per-turn", order=20, per_dram=True)
def per_turn(res: Results, out: Path, dram: int | None = None) -> list[FigureFile]:
    n_turns = int(res.per_turn["turn"].max()) if len(res.per_turn) else 8
    values = by_cell(res.per_turn)

    def draw(ax: plt.Axes, cells: pd.DataFrame, g: str, d: int, j: float) -> set[str]:
        top = _turn_lines(ax, cells, values, "mean_latency_s")
        ax.yaxis.set_major_formatter(FuncFormatter(plotkit.seconds))
        hit = _seed_turns(ax, res.reference, cells, g, d, j, top, n_turns)
        ax.set_ylim(bottom=0)
        return {"seed", "seed_band"} if hit else set()

    return _by_dram(res, out, "per_turn", "Per-turn latency",
                    "Mean latency (request sent to last token) of ok turns per turn index "
                    f"({res.options.window.describe()}). Stars/bands: the seed's §3 values.",
                    "latency (s)", draw, dram)


@figure(name="cached_per_turn", cost=8.5, section="why", order=50, after_table=True,
        per_dram=True)
def cached_per_turn(res: Results, out: Path, dram: int | None = None) -> list[FigureFile]:
    if res.cached_turn["mean_cached_tokens"].notna().sum() == 0:
        return []

    values = by_cell(res.cached_turn)

    def draw(ax: plt.Axes, cells: pd.DataFrame, g: str, d: int, j: float) -> set[str]:
        _turn_lines(ax, cells, values, "mean_cached_tokens")
        ok = [values[k] for k in map(tuple, cells.loc[cells["valid"], KEYS].to_numpy())
              if k in values]
        if ok:
            prompt = pd.concat(ok).groupby("turn")["mean_prompt_tokens"].mean()
            ax.plot(prompt.index, prompt.to_numpy(), color="#999", ls=":", lw=1)
        ax.set_ylim(bottom=0)
        return set()

    return _by_dram(res, out, "cached_per_turn", "Cached prompt tokens per turn",
                    "Mean cached prompt tokens the server reported per turn (grey dotted: "
                    "mean prompt tokens).", "tokens", draw, dram)


@figure(name="kv_usage", cost=8, section="why", order=60, after_table=True, per_dram=True)
def kv_usage(res: Results, out: Path, dram: int | None = None) -> list[FigureFile]:
    if res.kv_usage.empty:
        return []
    series = {k: g for k, g in res.kv_usage.groupby(KEYS)}

    def draw(ax: plt.Axes, cells: pd.DataFrame, g: str, d: int, j: float) -> set[str]:
        sweeps = sorted(cells["sweep"].unique())
        for s, ser, rows in plotkit.lines(cells[cells["valid"]]):
            look = plotkit.line_style(ser, sweeps, s)
            if not ser.default and len(sweeps) > 1:  # the line style is the sweep's: a few
                look.update(marker=ser.marker, ms=4, markevery=0.1)  # half-filled markers
            elif not ser.default:  # no markers: the line style says the order
                look = {"ls": look["ls"]}
            for key in rows[KEYS].itertuples(index=False):
                ts = series.get(tuple(key))
                if ts is not None:
                    ax.plot(ts["t_s"], ts["value"] * 100, color=ser.color, lw=1, **look)
        ax.set_ylim(0, 105)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}%"))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        return set()

    return _by_dram(res, out, "kv_usage", "KV-cache usage over time",
                    "vllm:kv_cache_usage_perc over the cell (bin means).", "KV usage", draw,
                    dram, sharex=False, xlabel="time since the cell's start (s)")
