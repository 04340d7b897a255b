"""`python -m analysis report`: sweep folders -> figures (PNG, SVG), tables (CSV, parquet),
index.json and one self-contained report.html in the output folder."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import page, pipeline, stats, style
from analysis.figreg import FIGURES
from analysis.figures import FigurePool
from analysis.load import KEYS
from analysis.page import Col
from analysis.plotkit import FigureFile
from analysis.validity import cell_label

log = logging.getLogger(__name__)


@dataclass
class Report:
    out: Path
    html: Path
    figures: list[FigureFile]
    tables: dict[str, Path]
    results: pipeline.Results


def write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_table(df: pd.DataFrame, out: Path, name: str) -> Path:
    """name.csv and name.parquet, each written under a temporary name and renamed."""
    csv, pq = out / f"{name}.csv", out / f"{name}.parquet"
    tmp_csv, tmp_pq = out / f".{name}.csv.tmp", out / f".{name}.parquet.tmp"
    df.to_csv(tmp_csv, index=False)
    df.to_parquet(tmp_pq, index=False)
    os.replace(tmp_csv, csv)
    os.replace(tmp_pq, pq)
    return csv


def tables(res: pipeline.Results) -> dict[str, pd.DataFrame]:
    keep = ["path", "state", "valid", "note", "done", "manifest_status", "jobs_expected",
            "jobs_started", "jobs_ok", "n_used", "turn_errors", "turns_not_sent", "retries",
            "lag_flag", "lag_p50_s", "lag_p99_s", "lag_max_s", "seed", "n_turns_spec"]
    cells = res.cells[KEYS + [c for c in keep if c in res.cells]]
    return {
        "cells": cells,
        "jct": cells[KEYS + ["state", "valid"]].merge(res.jct, on=KEYS, how="left"),
        "vs_reference_policy": res.vs,
        "per_turn": res.per_turn,
        "tlast_t1": res.ratio,
        "winners": res.winners,
        "why": res.why,
        "cached_per_turn": res.cached_turn,
        "kv_usage": res.kv_usage,
        "reference_check": res.ref_check,
        "predictions": res.predictions,
        "decisions": res.decisions,
        "tier_log": res.tier_log,
    }


# --- the page's tables: all cells, invalid ones by their state, never a number -----------------

def _row_class(r: dict) -> str:
    if r.get("state") == "unfinished":
        return "provisional"
    return "" if r.get("valid") else "invalid"


def _cells_frame(res: pipeline.Results) -> pd.DataFrame:
    c = res.cells.copy()
    c["cell"] = [cell_label(r) for r in c.to_dict("records")]
    return c


def _against(text: str, ref: str, ref_sched: object, sched: object) -> str:
    """A margin against the reference policy, naming the reference's scheduling order where
    it is not the default one or not the compared cell's (so always in a sweep without the
    sched axis)."""
    if not isinstance(ref_sched, str) or (ref_sched == sched == stats.DEFAULT_SCHED):
        return text
    return f"{text} (vs {style.series_label(ref, ref_sched)})"


def _jct_table(res: pipeline.Results, cells: pd.DataFrame) -> str:
    d = cells.merge(res.jct.drop(columns="n_used"), on=KEYS, how="left").merge(
        res.vs, on=KEYS, how="left")
    ref_policy = res.options.reference_policy
    ref = style.policy_label(ref_policy)

    def val(col: str, unit: str = " s") -> pd.Series:
        f = page.num(4, unit)
        return pd.Series([f(v) if ok else st.upper() for v, ok, st in
                          zip(d[col], d["valid"], d["state"], strict=True)], index=d.index)

    d = d.assign(mean=val("mean_jct_s"), p50=val("p50_jct_s"), p90=val("p90_jct_s"),
                 p99=val("p99_jct_s"),
                 ci=[page.ci(lo, hi, " s") for lo, hi in zip(d["ci_lo_s"], d["ci_hi_s"],
                                                             strict=True)],
                 vs=[_against(page.pct(p), ref_policy, rs, sc) if not page.isnan(p)
                     else page.pct(p)
                     for p, rs, sc in zip(d["pct"], d["vs_sched"], d["sched"], strict=True)],
                 vs_ci=[page.ci(lo, hi, "%") for lo, hi in zip(d["pct_lo"], d["pct_hi"],
                                                              strict=True)])
    cols = [Col("cell", "cell", cls="l"), Col("state", "state", cls="l"),
            Col("jobs_expected", "N"), Col("n_used", "jobs used", page.num(6)),
            Col("mean", "mean JCT"), Col("ci", f"{res.options.level:.0%} CI"),
            Col("p50", "p50"), Col("p90", "p90"), Col("p99", "p99"),
            Col("vs", f"vs {ref}"), Col("vs_ci", "CI")]
    return page.table(d, cols, _row_class, "table-jct")


def _per_turn_table(res: pipeline.Results, cells: pd.DataFrame) -> str:
    wide = res.per_turn.pivot_table(index=KEYS, columns="turn", values="mean_latency_s")
    turns = list(wide.columns)
    wide.columns = [f"T{t}" for t in turns]
    d = cells.merge(wide.reset_index(), on=KEYS, how="left")
    cols = [Col("cell", "cell", cls="l"), Col("state", "state", cls="l")]
    cols += [Col(f"T{t}", f"T{t} (s)", page.num(3)) for t in turns]
    return page.table(d, cols, _row_class, "table-per-turn")


def _ratio_table(res: pipeline.Results, cells: pd.DataFrame) -> str:
    d = cells.merge(res.ratio, on=KEYS, how="left")
    cols = [Col("cell", "cell", cls="l"), Col("state", "state", cls="l"),
            Col("t1_s", "T1 (s)", page.num(3)), Col("tlast_s", "Tlast (s)", page.num(3)),
            Col("tlast_over_t1", "Tlast/T1", page.num(3, "×")),
            Col("peak_turn", "peak turn", page.num(2)), Col("shape", "shape", cls="l")]
    return page.table(d, cols, _row_class, "table-tlast")


def _seed_says(res: pipeline.Results) -> dict[tuple, str]:
    rc = res.ref_check[res.ref_check["metric"].isin(["winner", "pct_win"])]
    out: dict[tuple, list[str]] = {}
    for r in rc.to_dict("records"):
        out.setdefault((r["sweep"], r["cell"]), []).append(f"§{r['section']}: {r['seed']}")
    return {k: "; ".join(v) for k, v in out.items()}


def _winner_table(res: pipeline.Results) -> str:
    w = res.winners.copy()
    ref = res.options.reference_policy
    seed = _seed_says(res)
    w["group"] = [stats.group_label(r) for r in w.to_dict("records")]
    w["seed"] = [seed.get((s, g), "") for s, g in zip(w["sweep"], w["group"], strict=True)]
    w["winner_l"] = [style.series_label(p, o) if isinstance(p, str) else "—"
                     for p, o in zip(w["winner"], w["winner_sched"], strict=True)]
    w["vsref"] = [_against(page.pct(p) + " " + page.ci(lo, hi, "%"), ref, rs, ws)
                  if not page.isnan(p) else ("(is the winner)" if win == ref else "—")
                  for p, lo, hi, win, ws, rs in
                  zip(w[f"pct_vs_{ref}"], w[f"{ref}_ci_lo"], w[f"{ref}_ci_hi"], w["winner"],
                      w["winner_sched"], w[f"{ref}_sched"], strict=True)]
    w["tie_t"] = ["TIE" if t else "" for t in w["tie"]]
    cols = [Col("sweep", "sweep", cls="l"), Col("group", "GPU / DRAM / JPS", cls="l"),
            Col("n_jobs", "N used"), Col("winner_l", "winner", cls="l"),
            Col("winner_jct_s", "mean JCT", page.num(4, " s")),
            Col("verdict", "winner vs runner-up [CI]", cls="l"), Col("tie_t", "tie?", cls="tie"),
            Col("vsref", f"winner vs {style.policy_label(ref)} [CI]"),
            Col("runner_up_jct_s", "runner-up JCT", page.num(4, " s")),
            Col("invalid", "invalid cells", cls="wrap"), Col("seed", "seed says", cls="wrap")]
    return page.table(w, cols, lambda r: "provisional" if r["invalid"] else "", "table-winners")


def _why_table(res: pipeline.Results, cells: pd.DataFrame) -> str:
    d = cells.merge(res.why, on=KEYS, how="left")
    for c in ("bytes_offload", "bytes_onload"):
        d[c.replace("bytes", "gb")] = d[c] / 1e9 if c in d else float("nan")
    cols = [Col("cell", "cell", cls="l"), Col("state", "state", cls="l"),
            Col("prefix_hit_rate", "prefix hit rate", page.percent),
            Col("cached_frac", "cached / prompt tokens", page.percent),
            Col("preemptions", "preemptions", page.num(6)),
            Col("gb_offload", "offload GB", page.num(4)),
            Col("gb_onload", "onload GB", page.num(4)),
            Col("kv_cache_gib", "KV cache GiB", page.num(4)),
            Col("write_through_gib", "write-through tier GiB", page.num(4)),
            Col("kv_usage_mean", "KV usage mean", page.num(3)),
            Col("kv_usage_max", "KV usage max", page.num(3))]
    return page.table(d, cols, _row_class, "table-why")


def _tier_log_table(d: pd.DataFrame) -> str:
    d = d.assign(gb_stored=d["bytes_stored"] / 1e9, gb_retrieved=d["bytes_retrieved"] / 1e9,
                 mtok_stored=d["tokens_stored"] / 1e6, mtok_looked_up=d["tokens_looked_up"] / 1e6)
    return page.para(
        "What LMCache's own log says of each cell (log_counts.json; its counters are not on "
        "vLLM's /metrics): lookups, and the share where it had lost a prefix the engine still "
        "held (its lookup stops at the first chunk it lacks), and the lookups where it held more "
        "than VRAM (the only ones it can serve); tokens stored and the bytes, "
        "seconds of stores on the engine's step, bytes retrieved, evictions.") + page.table(d, [
        Col("cell", "cell", cls="l"), Col("lookups", "lookups", page.num(6)),
        Col("lost_share", "prefix lost", page.percent),
        Col("lookups_above_engine", "held more than VRAM", page.num(6)),
        Col("mtok_looked_up", "M tokens looked up", page.num(3)),
        Col("mtok_stored", "M tokens stored", page.num(3)),
        Col("gb_stored", "GB stored", page.num(4)), Col("store_s", "store s", page.num(3)),
        Col("gb_retrieved", "GB retrieved", page.num(4)),
        Col("evictions", "evictions", page.num(6))], None, "table-tier-log")


def _policy_tables(res: pipeline.Results, cells: pd.DataFrame) -> str:
    """The predictor's error per tool and the scorer's decisions (analysis.policy_counters),
    for the cells of kvbench's predictive policies; a line saying so when there are none."""
    labels = cells[KEYS + ["cell"]]
    parts = [] if res.tier_log.empty else [_tier_log_table(res.tier_log.merge(labels, on=KEYS))]
    if res.predictions.empty and res.decisions.empty:
        return "".join(parts) + page.para(
            "No cell of these sweeps ran a kvbench policy that predicts tool times or decides "
            "where KV goes (predictive_*, predictive_scored).")
    if not res.predictions.empty:
        d = res.predictions.merge(labels, on=KEYS, how="left")
        d["tool"] = d["tool"].replace("", "(unnamed)")
        parts.append(page.para(
            "Tool-time predictions, per tool and pooled: n returns, bias (mean predicted minus "
            "actual gap: positive waits too long), mean absolute error, and the share of "
            "turns that came back before the predicted time."))
        parts.append(page.table(d, [
            Col("cell", "cell", cls="l"), Col("tool", "tool", cls="l"),
            Col("predictions", "n", page.num(6)), Col("bias_s", "bias", page.num(3, " s")),
            Col("mae_s", "MAE", page.num(3, " s")),
            Col("early_share", "back before predicted", page.percent)], None,
            "table-predictions"))
    if not res.decisions.empty:
        d = res.decisions.merge(labels, on=KEYS, how="left")
        heads = {"kept": "kept", "offloaded": "offloaded", "dropped": "dropped",
                 "redecisions": "re-decided", "prefetch_hits": "prefetch hits",
                 "prefetch_late": "prefetch late", "wasted_offloads": "wasted offloads",
                 "offloads_unread": "offloads unread", "wasted_prefetches": "wasted prefetches",
                 "offload_skipped": "offloads skipped (host full)"}
        parts.append(page.para(
            "Where each job's KV went during its tool calls (predictive_scored decides; "
            "predictive_* offload every time) and what came of it; counts over the cell."))
        parts.append(page.table(d, [Col("cell", "cell", cls="l")] + [
            Col(k, v, page.num(6)) for k, v in heads.items()], None, "table-decisions"))
    return "".join(parts)


def _validity_table(cells: pd.DataFrame) -> str:
    cols = [Col("cell", "cell", cls="l"), Col("sweep", "sweep", cls="l"),
            Col("state", "state", cls="l"), Col("done", "DONE"),
            Col("manifest_status", "manifest status", cls="l"),
            Col("jobs_ok", "jobs ok"), Col("jobs_started", "started"),
            Col("jobs_expected", "N (spec)"), Col("turn_errors", "error rows"),
            Col("turns_not_sent", "not sent"), Col("retries", "retries", page.num(6)),
            Col("lag_p50_s", "lag p50", page.num(3, " s")),
            Col("lag_p99_s", "lag p99", page.num(3, " s")),
            Col("lag_max_s", "lag max", page.num(3, " s")), Col("lag_flag", "lag flag"),
            Col("note", "note", cls="wrap")]
    return page.table(cells, cols, _row_class, "table-validity")


def _reference_table(res: pipeline.Results) -> str:
    d = res.ref_check.copy()
    d["ok"] = ["yes" if a is True else "no" if a is False else "n/a" for a in d["agrees"]]
    cols = [Col("section", "§"), Col("cell", "cell / group", cls="l"),
            Col("metric", "metric", cls="l"), Col("seed", "seed"), Col("ours", "ours"),
            Col("ratio", "ours / seed", page.num(3, "×")), Col("ok", "agrees?"),
            Col("quote", "statement", cls="wrap"), Col("note", "note", cls="wrap")]
    return page.table(d, cols, lambda r: "" if r["agrees"] is not None else "provisional",
                      "table-reference")


def _summary(res: pipeline.Results) -> list[str]:
    c = res.cells
    counts = c["state"].value_counts().to_dict()
    parts = [page.para("Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                       + f" (of {len(c)}).")]
    orders = style.sched_order(c["sched"].unique())
    if orders != [stats.DEFAULT_SCHED]:
        parts.append(page.para(
            "Scheduling orders: " + ", ".join(f"{o} ({style.sched_label(o)})" for o in orders)
            + ". A figure's line is a policy under one order (same colour; another order than "
            "the engine's: dashed, half-filled markers); the winner of a group is the best "
            "(policy, order) pair; a cell is compared with the reference policy under its own "
            "order where that cell exists, else under the engine's order. The seed's numbers "
            "are about the engine's order only."))
    warn = []
    if not c["valid"].all():
        warn.append(f"{int((~c['valid']).sum())} cell(s) are invalid or missing: they appear "
                    "by their state in every table and as ✕ marks in the figures, never as "
                    "numbers.")
    if (c["state"] == "unfinished").any():
        warn.append("Some cells have no DONE marker (a running or interrupted sweep): their "
                    "numbers are provisional (hollow markers).")
    if not res.winners.empty and not res.winners["comparable"].all():
        warn.append("N or seed differs between policies of some groups: those comparisons "
                    "do not hold (RESEARCH-NOTES).")
    warn += res.warnings
    for f, cols in res.missing_columns.items():
        warn.append(f"{f}.parquet lacks column(s) {', '.join(cols)} of docs/records.md.")
    parts += [page.para(w, "warn") for w in warn]
    return parts


def _placed(figs: list[FigureFile], sections: list[tuple[str, str, str]]
            ) -> dict[str, tuple[str, str]]:
    """Each section's figures (before its table, after it) as the registry places them: by
    `order`, a per-DRAM figure's files in drawing order. Raises on a figure the registry
    lacks or whose section the page lacks (a figure must never silently drop out)."""
    ids = [sid for sid, _, _ in sections]
    unknown = sorted({f.name for f in figs if f.figure not in FIGURES})
    if unknown:
        raise ValueError(f"figure(s) {', '.join(unknown)} are not registered (analysis.figreg)")
    lost = sorted({f"{f.figure} -> {FIGURES[f.figure].section}" for f in figs
                   if FIGURES[f.figure].section not in ids})
    if lost:
        raise ValueError(f"figure(s) name a section report.html lacks: {', '.join(lost)} "
                         f"(sections: {', '.join(ids)})")
    parts: dict[str, tuple[list[str], list[str]]] = {sid: ([], []) for sid in ids}
    for f in sorted(figs, key=lambda f: FIGURES[f.figure].order):  # stable: DRAMs keep order
        entry = FIGURES[f.figure]
        parts[entry.section][int(entry.after_table)].append(page.figure(f))
    return {sid: ("".join(before), "".join(after)) for sid, (before, after) in parts.items()}


def html(res: pipeline.Results, figs: list[FigureFile]) -> str:
    """The page. Figures go where their registration (analysis.figreg) says: each section
    below is (id, title, its table or text); its figures stand before or after that."""
    o = res.options
    cells = _cells_frame(res)
    names = ", ".join(s["name"] for s in res.sweeps)
    meta = [f"sweeps: {names}",
            "folders: " + "; ".join(s["path"] for s in res.sweeps),
            f"window: {o.window.describe()}",
            f"confidence intervals: {o.level:.0%}, bootstrap over jobs, {o.n_boot} resamples "
            "(paired across the policies of a group when they ran the same jobs); a margin "
            "whose interval holds 0 is a tie",
            f"cells invalid when more than {o.max_failed_frac:.0%} of jobs fail",
            "reference: the seed's quoted values (analysis/reference.csv, research update "
            "2026-04-14)"]
    sections = [
        ("summary", "Summary", "".join(_summary(res))),
        ("jct", "Average JCT vs JPS (seed §2.1, §2.2)", _jct_table(res, cells)),
        ("per-turn", "Per-turn latency (seed §3)", _per_turn_table(res, cells)),
        ("tlast", "Last turn over first turn and shape (seed §3.5)", _ratio_table(res, cells)),
        ("winners", "Winner per GPU, DRAM and JPS (seed §2.3)", _winner_table(res)),
        ("why", "Why", _why_table(res, cells)),
        ("policies", "What the policies counted: predictions, decisions, LMCache's log",
         _policy_tables(res, cells)),
        ("validity", "Validity of every cell", _validity_table(cells)),
        ("reference", "Against the seed's quoted numbers", page.para(
            f"A stated value 'agrees' when ours lies within it, each end widened by "
            f"{o.tolerance:.0%} ({2 * o.tolerance:.0%} for approximate statements).")
         + _reference_table(res)),
    ]
    placed = _placed(figs, sections)
    built = [(sid, title, page.section(sid, title, placed[sid][0] + body + placed[sid][1]))
             for sid, title, body in sections]
    footer = page.para("Tables as CSV and parquet, figures as PNG and SVG beside this file; "
                       "see docs/analysis.md for what each shows.")
    return page.page(f"kvbench report — {names}", meta, built, footer)


def default_out(paths: list[str | Path]) -> Path:
    return Path("reports") / "+".join(Path(p).resolve().name for p in paths)


def build(paths: list[str | Path], out: str | Path | None = None,
          options: pipeline.Options | None = None, workers: int = 1) -> Report:
    out = Path(out) if out else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with FigurePool(workers) as pool:
        res = pipeline.compute(paths, options)
        t1 = time.perf_counter()
        figs = pool.draw_all(res, out)
    t2 = time.perf_counter()
    written = {name: write_table(df, out, name) for name, df in tables(res).items()}
    page_path = write_text(out / "report.html", html(res, figs))
    log.info("timings: statistics %.1f s, figures %.1f s (%d workers), tables and page %.1f s",
             t1 - t0, t2 - t1, workers, time.perf_counter() - t2)
    index = {"report": page_path.name, "sweeps": res.sweeps,
             "window": res.options.window.describe(),
             "figures": [{"name": f.name, "png": f.png.name, "svg": f.svg.name} for f in figs],
             "tables": {k: [v.name, v.with_suffix(".parquet").name] for k, v in written.items()},
             "cells": [cell_label(r) for r in res.cells.to_dict("records")]}
    write_text(out / "index.json", json.dumps(index, indent=2, default=str))
    log.info("report: %s", page_path)
    return Report(out, page_path, figs, written, res)


def build_report(paths: list[str | Path], out: str | Path | None = None,
                 options: pipeline.Options | None = None, workers: int = 1) -> Path:
    """build() for callers that only want the page's path (launch runs this after a sweep)."""
    return build(paths, out, options, workers).html
