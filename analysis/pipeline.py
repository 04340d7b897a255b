"""From sweep folders to every table the report shows: load, validity, statistics, why,
reference check. The report, the comparison and the tests all start here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import policy_counters, reference, stats, validity, why
from analysis.load import KEYS, load
from harness import kv_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    window: stats.Window = field(default_factory=stats.Window)
    n_boot: int = 1000  # bootstrap resamples over jobs (0: no CI, no tie detection)
    level: float = 0.95  # confidence level of the intervals
    seed: int = 0  # bootstrap random seed
    max_failed_frac: float = 0.0  # jobs that may fail before a cell is invalid
    reference_csv: Path | None = None  # default: analysis/reference.csv
    reference_policy: str = stats.REFERENCE_POLICY  # the "vs Continuum" of the tables
    tolerance: float = reference.DEFAULT_TOLERANCE  # of the reference check


@dataclass
class Results:
    options: Options
    sweeps: list[dict]  # name, path, sweep.json of each sweep read
    missing_columns: dict[str, list[str]]  # records columns the sweeps lack, per file
    cells: pd.DataFrame  # every cell with its state (validity.assess)
    jct: pd.DataFrame  # per valid cell: mean/p50/p90/p99 JCT and CI
    vs: pd.DataFrame  # per valid cell: percent against the reference policy, CI
    winners: pd.DataFrame  # per sweep x GPU x DRAM x JPS
    per_turn: pd.DataFrame  # per valid cell and turn
    ratio: pd.DataFrame  # Tlast/T1 and shape per valid cell
    why: pd.DataFrame  # per valid cell
    cached_turn: pd.DataFrame  # per valid cell and turn
    kv_usage: pd.DataFrame  # per valid cell, downsampled time series
    samples: dict[tuple, pd.Series]  # JCT of the jobs used, per valid cell, by job id
    warnings: list[str]  # about the data, for the report's summary
    reference: pd.DataFrame  # reference.csv
    ref_check: pd.DataFrame  # reference statements against our cells
    # kvbench's policies (analysis.policy_counters): per valid cell and tool, the tool-time
    # predictor's error; per valid cell, the keep/offload/drop decisions and prefetch outcomes
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)
    # per valid cell that kept its policy's log counts (LMCache): lookups, stores, retrieves
    tier_log: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def valid(self) -> pd.DataFrame:
        return self.cells[self.cells["valid"]]


def compute(paths: list[str | Path], options: Options | None = None) -> Results:
    o = options or Options()
    data = load(paths, metric_names=why.METRIC_NAMES + policy_counters.METRIC_NAMES)
    cells = validity.assess(data.cells, data.jobs, data.turns, o.max_failed_frac)
    valid = cells[cells["valid"]]
    jobs_w = stats.window_jobs(data.jobs, o.window)
    samples = stats.job_samples(jobs_w, valid)
    boot = stats.bootstrap(samples, o.n_boot, o.level, o.seed)
    jct = stats.cell_jct(samples, boot)
    cells = cells.merge(jct[KEYS + ["n_used"]], on=KEYS, how="left")
    turns_ok = stats.in_window_turns(data.turns, jobs_w, o.window)
    pt = stats.per_turn(turns_ok, valid)
    ratio = stats.turn_ratio(pt)
    all_ok = turns_ok if o.window.is_all else data.turns[data.turns["status"] == "ok"]
    ref = reference.load_reference(o.reference_csv)
    warnings = _clock_warnings(data.metrics, data.jobs)
    metrics = why.drop_clock_outliers(data.metrics, data.jobs) if warnings else data.metrics
    winners = stats.winners(cells, samples, boot, o.reference_policy)
    seed_order = reference.seed_cells(cells)  # the seed's winners are among these
    seed_winners = winners if len(seed_order) == len(cells) else stats.winners(
        seed_order, samples, boot, o.reference_policy)
    why_t = why.why_table(valid, turns_ok, metrics, all_ok)
    warnings += _hit_rate_warnings(why_t) + _tier_warnings(valid)
    res = Results(
        options=o, sweeps=data.sweeps, missing_columns=data.missing_columns, cells=cells,
        jct=jct,
        vs=stats.versus(samples, boot, o.reference_policy),
        winners=winners, per_turn=pt, ratio=ratio,
        why=why_t,
        cached_turn=why.cached_per_turn(turns_ok, valid),
        kv_usage=why.downsample(why.kv_usage(metrics).merge(valid[KEYS], on=KEYS)),
        samples=samples,
        warnings=warnings,
        reference=ref,
        ref_check=reference.check(ref, cells, jct, pt, ratio, seed_winners, o.tolerance),
        predictions=policy_counters.predictions(metrics).merge(valid[KEYS], on=KEYS),
        decisions=policy_counters.decisions(metrics).merge(valid[KEYS], on=KEYS),
        tier_log=why.log_table(valid),
    )
    log.info("computed: %d cells (%d valid), %d groups", len(cells), int(cells["valid"].sum()),
             len(winners))
    return res


def _hit_rate_warnings(w: pd.DataFrame) -> list[str]:
    over = w[w["prefix_hit_rate"] > 1.0] if "prefix_hit_rate" in w else w.iloc[:0]
    if over.empty:
        return []
    names = ", ".join(f"{r.policy}{'' if r.sched == stats.DEFAULT_SCHED else f' ({r.sched})'}"
                      f" jps={r.jps:g} ({r.prefix_hit_rate:.1f})" for r in over.itertuples())
    return [f"prefix_hit_rate above 1 in {len(over)} cell(s): {names}. vLLM counts a waiting "
            "request's prefix hits again at every scheduling step; read cached_frac (the "
            "responses' cached_tokens) for the share of prompt tokens served from cache."]


def _tier_warnings(valid: pd.DataFrame) -> list[str]:
    """Cells whose write-through host tier (LMCache, vLLM's offload) was smaller than the KV
    cache their engine allocated (both in the manifest, ``harness.cell.kv_cache``)."""
    if not {"write_through_gib", "kv_cache_gib"} <= set(valid.columns):
        return []
    tier, kv = valid["write_through_gib"].astype(float), valid["kv_cache_gib"].astype(float)
    small = valid[tier < kv]
    if small.empty:
        return []
    names = "; ".join(f"{validity.cell_label(r)} ({r['write_through_gib']:g} < "
                      f"{r['kv_cache_gib']:.1f} GiB)" for r in small.to_dict("records"))
    return [f"host tier smaller than the engine's KV cache in {len(small)} cell(s): {names}. "
            f"{kv_size.WHY_SMALL_TIER.capitalize()}: these cells measure that tier's cost, not "
            "its benefit."]


def _clock_warnings(metrics: pd.DataFrame, jobs: pd.DataFrame) -> list[str]:
    bad = why.clock_outliers(metrics, jobs)
    if bad.empty:
        return []
    cells = "; ".join(f"{validity.cell_label(r)} ({r['n']} at t_s {r['t_min']:.4g}.."
                      f"{r['t_max']:.4g} s, jobs end by {r['end_s']:.4g} s)"
                      for r in bad.to_dict("records"))
    text = (f"metrics.parquet of {len(bad)} cell(s) has samples far outside the cell, whose "
            "scrape clock is not relative to t0; they were left out, so counter increases "
            "(hits, preemptions, offload bytes) start at each cell's first good sample: "
            + cells)
    log.warning(text)
    return [text]
