"""`python -m analysis compare A B`: two runs of the same matrix (a reproduction, an engine
upgrade), cell by cell: mean JCT and per-turn latency of B against A, with a bootstrap CI of
the difference (paired over jobs when both cells ran the same job ids). Cells line up by the
whole cell key (GPU, DRAM, policy, scheduling order, JPS); a sweep written before an axis
existed reads with that axis's legacy value (sched=fcfs), so it lines up with a newer one."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from analysis import page, pipeline, plotkit, stats, style
from analysis.load import cell_of
from analysis.page import Col
from analysis.report import write_table, write_text
from harness.cellkey import NAMES

log = logging.getLogger(__name__)

CELL = list(NAMES)  # a cell without its sweep


@dataclass
class Comparison:
    out: Path
    html: Path
    cells: pd.DataFrame
    per_turn: pd.DataFrame


def _side(res: pipeline.Results, tag: str) -> pd.DataFrame:
    c = res.cells[CELL + ["sweep", "state", "valid", "jobs_expected", "seed"]].merge(
        res.jct[CELL + ["mean_jct_s", "n_used"]], on=CELL, how="left")
    return c.rename(columns={k: f"{k}_{tag}" for k in c.columns if k not in CELL})


def _diff(row: dict, a: pipeline.Results, b: pipeline.Results, o: pipeline.Options) -> dict:
    ka = (row["sweep_a"], *(row[k] for k in CELL))
    kb = (row["sweep_b"], *(row[k] for k in CELL))
    if not (row.get("valid_a") is True and row.get("valid_b") is True) or \
            ka not in a.samples or kb not in b.samples:
        return {"diff_pct": math.nan, "ci_lo": math.nan, "ci_hi": math.nan, "paired": False}
    rng = stats._rng(o.seed, "compare", ka, kb)
    pct, lo, hi, paired = stats.compare_samples(b.samples[kb], a.samples[ka], o.n_boot,
                                                o.level, rng)
    return {"diff_pct": pct, "ci_lo": lo, "ci_hi": hi, "paired": paired}


def _verdict(r: dict) -> str:
    for tag in ("a", "b"):
        if r.get(f"valid_{tag}") is not True:
            st = r.get(f"state_{tag}")
            return f"{tag.upper()}: {st if isinstance(st, str) else 'absent'}"
    text = "same" if stats.is_tie(r["ci_lo"], r["ci_hi"]) else (
        "B slower" if r["diff_pct"] > 0 else "B faster")
    if not r["comparable"]:
        text += " (N or seed differs)"
    return text


def cell_diffs(a: pipeline.Results, b: pipeline.Results) -> pd.DataFrame:
    d = _side(a, "a").merge(_side(b, "b"), on=CELL, how="outer")
    d["comparable"] = (d["jobs_expected_a"] == d["jobs_expected_b"]) & (
        d["seed_a"].fillna(-1) == d["seed_b"].fillna(-1))
    d["diff_s"] = d["mean_jct_s_b"] - d["mean_jct_s_a"]
    extra = pd.DataFrame([_diff(r, a, b, a.options) for r in d.to_dict("records")],
                         index=d.index)
    d = pd.concat([d, extra], axis=1)
    d["verdict"] = [_verdict(r) for r in d.to_dict("records")]
    return d.sort_values(CELL, ignore_index=True)


def turn_diffs(a: pipeline.Results, b: pipeline.Results) -> pd.DataFrame:
    cols = CELL + ["turn", "mean_latency_s"]
    d = a.per_turn[cols].merge(b.per_turn[cols], on=CELL + ["turn"], how="outer",
                               suffixes=("_a", "_b"))
    d["diff_pct"] = (d["mean_latency_s_b"] / d["mean_latency_s_a"] - 1) * 100
    return d.sort_values(CELL + ["turn"], ignore_index=True)


def _figure(d: pd.DataFrame, names: tuple[str, str], out: Path) -> plotkit.FigureFile:
    fig, axes = plotkit.grid(1, 2, panel_w=5.0, panel_h=4.2, wgap=1.0, bottom=1.0)
    ax1, ax2 = axes[0]
    ok = d[d["valid_a"].eq(True) & d["valid_b"].eq(True)]
    for ser in plotkit.series_of(ok):
        s = ok[(ok["policy"] == ser.policy) & (ok["sched"] == ser.sched)]
        ax1.plot(s["mean_jct_s_a"], s["mean_jct_s_b"], ls="none", marker=ser.marker,
                 color=ser.color, **ser.fill())
    lim = plotkit.finite(pd.concat([ok["mean_jct_s_a"], ok["mean_jct_s_b"]]))
    if lim.size:
        lo, hi = lim.min() / 1.5, lim.max() * 1.5
        ax1.plot([lo, hi], [lo, hi], color="#888", lw=0.8, ls=":")
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    for ax in (ax1,):
        ax.xaxis.set_major_formatter(FuncFormatter(plotkit.seconds))
        ax.yaxis.set_major_formatter(FuncFormatter(plotkit.seconds))
    ax1.set_xlabel(f"A: {names[0]} mean JCT")
    ax1.set_ylabel(f"B: {names[1]} mean JCT")
    ax1.set_title("Mean JCT, B against A (dotted: equal)")
    sers = [style.Series(p, o) for p, o in zip(d["policy"], d["sched"], strict=True)]
    labels = [f"{style.gpu_label(g)}/{dr}/{ser.label}/{j:g}" for g, dr, ser, j in
              zip(d["gpu"], d["dram"], sers, d["jps"], strict=True)]
    y = np.arange(len(d))
    vals = d["diff_pct"].to_numpy(float)
    err = np.vstack([vals - d["ci_lo"].to_numpy(float), d["ci_hi"].to_numpy(float) - vals])
    bars = ax2.barh(y, np.nan_to_num(vals), xerr=np.where(np.isfinite(err), err, 0),
                    color=[ser.color for ser in sers], alpha=0.8)
    for bar, ser in zip(bars, sers, strict=True):
        if not ser.default:  # another scheduling order: hatched
            bar.set_hatch("//")
    for yi, v, verdict in zip(y, vals, d["verdict"], strict=True):
        if not np.isfinite(v):
            ax2.text(0, yi, f"  ✕ {verdict}", va="center", fontsize=7, color="#a00")
    ax2.set_yticks(y, labels, fontsize=6.5)
    ax2.invert_yaxis()
    ax2.axvline(0, color="#444", lw=0.8)
    ax2.set_xlabel("B vs A, mean JCT (%)")
    ax2.set_title("Difference per cell (bars: CI)")
    cells = pd.DataFrame({"policy": d["policy"], "sched": d["sched"], "sweep": "x"})
    plotkit.legend(fig, cells, ["invalid"])
    plotkit.finish(fig, f"Compare A = {names[0]} and B = {names[1]}",
                   plotkit.n_text(pd.DataFrame({"jobs_expected": pd.concat(
                       [d["jobs_expected_a"], d["jobs_expected_b"]]), "seed": pd.concat(
                       [d["seed_a"], d["seed_b"]])})))
    return plotkit.save(fig, out, "compare", "B against A", "Cells present and valid in both.")


def _html(d: pd.DataFrame, t: pd.DataFrame, fig: plotkit.FigureFile, names: tuple[str, str],
          o: pipeline.Options) -> str:
    d = d.assign(cell=[cell_of(r).rel_dir for r in d.to_dict("records")],
                 ci=[page.ci(lo, hi, "%") for lo, hi in zip(d["ci_lo"], d["ci_hi"],
                                                           strict=True)])
    cols = [Col("cell", "cell", cls="l"), Col("state_a", "state A", cls="l"),
            Col("state_b", "state B", cls="l"), Col("jobs_expected_a", "N A", page.num(6)),
            Col("jobs_expected_b", "N B", page.num(6)),
            Col("mean_jct_s_a", "mean JCT A", page.num(4, " s")),
            Col("mean_jct_s_b", "mean JCT B", page.num(4, " s")),
            Col("diff_pct", "B vs A", page.pct), Col("ci", f"{o.level:.0%} CI"),
            Col("verdict", "verdict", cls="l")]
    wide = t.pivot_table(index=CELL, columns="turn", values="diff_pct")
    wide.columns = [f"T{c}" for c in wide.columns]
    wide = wide.reset_index()
    wide["cell"] = [cell_of(r).rel_dir for r in wide.to_dict("records")]
    tcols = [Col("cell", "cell", cls="l")] + [Col(c, f"{c} B vs A", page.pct)
                                               for c in wide.columns if c.startswith("T")]
    sections = [
        ("cells", "Mean JCT per cell", page.figure(fig) + page.table(
            d, cols, lambda r: "" if r["valid_a"] is True and r["valid_b"] is True
            else "invalid", "table-compare")),
        ("turns", "Per-turn latency, B vs A", page.table(wide, tcols, table_id="table-turns")),
    ]
    sections = [(sid, title, page.section(sid, title, body)) for sid, title, body in sections]
    meta = [f"A: {names[0]}", f"B: {names[1]}", f"window: {o.window.describe()}",
            f"{o.level:.0%} bootstrap CI over jobs ({o.n_boot} resamples), paired when both "
            "cells ran the same job ids; 'same' when the CI holds 0"]
    return page.page(f"kvbench compare — {names[0]} vs {names[1]}", meta, sections, "")


def compare(a: str | Path, b: str | Path, out: str | Path | None = None,
            options: pipeline.Options | None = None) -> Comparison:
    a, b = Path(a), Path(b)
    ra, rb = pipeline.compute([a], options), pipeline.compute([b], options)
    names = (ra.sweeps[0]["name"], rb.sweeps[0]["name"])
    out = Path(out) if out else Path("reports") / f"compare_{names[0]}_vs_{names[1]}"
    out.mkdir(parents=True, exist_ok=True)
    d, t = cell_diffs(ra, rb), turn_diffs(ra, rb)
    write_table(d, out, "compare")
    write_table(t, out, "per_turn_compare")
    fig = _figure(d, names, out)
    html = write_text(out / "compare.html", _html(d, t, fig, names, ra.options))
    return Comparison(out, html, d, t)


def summary(c: Comparison) -> str:
    rows = c.cells.to_dict("records")
    cells = [cell_of(r).rel_dir for r in rows]
    w = max([44, *map(len, cells)])
    lines = [f"{'cell':{w}} {'A (s)':>9} {'B (s)':>9} {'B vs A':>8}  CI              verdict"]
    for cell, r in zip(cells, rows, strict=True):
        lines.append(f"{cell:{w}} {page.num(4)(r['mean_jct_s_a']):>9} "
                     f"{page.num(4)(r['mean_jct_s_b']):>9} {page.pct(r['diff_pct']):>8}  "
                     f"{page.ci(r['ci_lo'], r['ci_hi'], '%'):15} {r['verdict']}")
    return "\n".join(lines)
