"""Why a policy wins: prefix-cache hits, cached prompt tokens, preemptions, KV-cache usage over
time and offload traffic, per cell.

Counters are read as increases over the cell (sum of positive steps; a drop is a counter
reset and counts the new value), summed over series (engines). The prefix-cache hit rate is
hits / prompt tokens sent: `vllm:prefix_cache_queries_total` counts a waiting request again
on every scheduling step, so queries are not a denominator (RESEARCH-NOTES); hits are counted
again too, so the rate can exceed 1 where requests wait long (the pipeline warns; read
`cached_frac`, from the responses' `cached_tokens`, instead). Metrics cover
the whole cell; turn-based columns follow the job window.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.load import KEYS
from harness.plugins.counters import counter

log = logging.getLogger(__name__)

HITS = "vllm:prefix_cache_hits_total"
QUERIES = "vllm:prefix_cache_queries_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
PREEMPTIONS = "vllm:num_preemptions_total"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # new name, old name
OFFLOAD_BYTES = "vllm:kv_offload_total_bytes_total"
# the kvbench plugins' own transfer counters (harness/plugins/stats.py): host tier <-> VRAM
PLUGIN_BYTES = {counter("offload_bytes"): "offload",
                counter("prefetch_bytes"): "onload",
                counter("late_load_bytes"): "onload"}
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
COUNTERS = (HITS, QUERIES, EXTERNAL_HITS, PREEMPTIONS, OFFLOAD_BYTES, *PLUGIN_BYTES)
METRIC_NAMES = [*COUNTERS, *KV_USAGE, RUNNING, WAITING]
OFFLOAD_LABELS = {"GPU_to_CPU": "offload", "CPU_to_GPU": "onload"}


def counter_increase(metrics: pd.DataFrame, names: Sequence[str] = COUNTERS) -> pd.DataFrame:
    """Increase of every counter series (cell, name, labels) of ``names`` over its samples."""
    m = metrics[metrics["name"].isin(list(names))]
    if m.empty:
        return pd.DataFrame(columns=KEYS + ["name", "labels", "increase"])
    m = m.sort_values(KEYS + ["name", "labels", "t_s"])
    step = m.groupby(KEYS + ["name", "labels"], sort=False)["value"].diff()
    inc = step.where((step >= 0) | step.isna(), m["value"]).fillna(0.0)  # drop: a reset
    out = m.assign(increase=inc).groupby(KEYS + ["name", "labels"], sort=False)["increase"]
    return out.sum().reset_index()


def label_value(labels: pd.Series, key: str) -> pd.Series:
    parsed = {s: (json.loads(s) if isinstance(s, str) and s else {}) for s in labels.unique()}
    return labels.map(lambda s: str(parsed[s].get(key, "unlabelled")))


def offload_bytes(inc: pd.DataFrame) -> pd.DataFrame:
    """Offload/onload bytes per cell, one column per transfer_type (named offload/onload for
    vLLM's GPU_to_CPU/CPU_to_GPU); the kvbench plugins' host-tier bytes count as offload
    (VRAM -> host) and onload (prefetches and late loads, host -> VRAM)."""
    o = inc[inc["name"].isin([OFFLOAD_BYTES, *PLUGIN_BYTES])]
    if o.empty:
        return pd.DataFrame(columns=KEYS)
    vllm_kind = label_value(o["labels"], "transfer_type").map(lambda t: OFFLOAD_LABELS.get(t, t))
    kind = o["name"].map(PLUGIN_BYTES).fillna(vllm_kind)
    wide = o.assign(kind="bytes_" + kind).pivot_table(index=KEYS, columns="kind",
                                                      values="increase", aggfunc="sum")
    wide.columns.name = None
    return wide.reset_index()


def _counter_totals(inc: pd.DataFrame) -> pd.DataFrame:
    names = {HITS: "prefix_hits", QUERIES: "prefix_queries", EXTERNAL_HITS: "external_hits",
             PREEMPTIONS: "preemptions"}
    c = inc[inc["name"].isin(list(names))]
    if c.empty:
        return pd.DataFrame(columns=KEYS + list(names.values()))
    wide = c.pivot_table(index=KEYS, columns="name", values="increase", aggfunc="sum")
    wide = wide.rename(columns=names)
    wide.columns.name = None
    return wide.reset_index()


def _gauge_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    k = kv_usage(metrics)
    if k.empty:
        return pd.DataFrame(columns=KEYS + ["kv_usage_mean", "kv_usage_max"])
    g = k.groupby(KEYS, sort=False)["value"]
    return pd.DataFrame({"kv_usage_mean": g.mean(), "kv_usage_max": g.max()}).reset_index()


def kv_usage(metrics: pd.DataFrame) -> pd.DataFrame:
    """KV-cache usage samples (0..1), averaged over engines at each scrape; a cell that
    reports both names uses the newer one."""
    m = metrics[metrics["name"].isin(KV_USAGE)]
    if m.empty:
        return pd.DataFrame(columns=KEYS + ["t_s", "value"])
    new = m[m["name"] == KV_USAGE[0]]
    old = m[m["name"] != KV_USAGE[0]].merge(new[KEYS].drop_duplicates(), on=KEYS, how="left",
                                            indicator=True)
    m = pd.concat([new, old[old["_merge"] == "left_only"].drop(columns="_merge")])
    return m.groupby(KEYS + ["t_s"], sort=True)["value"].mean().reset_index()


def downsample(series: pd.DataFrame, points: int = 300) -> pd.DataFrame:
    """At most `points` time bins per cell (bin means), for drawing."""
    if series.empty:
        return series
    t = series.groupby(KEYS, sort=False)["t_s"]
    t0, span = t.transform("min"), t.transform("max") - t.transform("min")
    b = ((series["t_s"] - t0) / span.where(span > 0, 1.0) * points).clip(upper=points - 1)
    out = series.assign(_bin=b.astype("int64")).groupby(KEYS + ["_bin"], sort=True)
    return out.agg(t_s=("t_s", "mean"), value=("value", "mean")).reset_index()[
        KEYS + ["t_s", "value"]]


def token_totals(turns_ok: pd.DataFrame) -> pd.DataFrame:
    """Prompt tokens (server's count where reported) and cached prompt tokens per cell."""
    prompt = turns_ok["server_prompt_tokens"].fillna(turns_ok["prompt_tokens"])
    t = turns_ok.assign(_prompt=prompt, _cached=turns_ok["cached_tokens"])
    g = t.groupby(KEYS, sort=False)
    return pd.DataFrame({
        "turns_ok": g.size(),
        "prompt_tokens": g["_prompt"].sum(),
        "cached_tokens": g["_cached"].sum(min_count=1),
    }).reset_index()


def cached_per_turn(turns_ok: pd.DataFrame, valid: pd.DataFrame) -> pd.DataFrame:
    """Mean prompt and cached prompt tokens per valid cell and turn."""
    g = turns_ok.groupby(KEYS + ["turn"], sort=True)
    out = pd.DataFrame({"mean_prompt_tokens": g["prompt_tokens"].mean(),
                        "mean_cached_tokens": g["cached_tokens"].mean()}).reset_index()
    out["cached_frac"] = out["mean_cached_tokens"] / out["mean_prompt_tokens"]
    return out.merge(valid[KEYS], on=KEYS).astype({"turn": "int64"})


def why_table(valid: pd.DataFrame, turns_ok: pd.DataFrame, metrics: pd.DataFrame,
              turns_cell_ok: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per valid cell: the mechanisms behind its JCT. turns_ok follows the job window;
    turns_cell_ok (default: the same) holds every ok turn of the cell, the denominator of the
    server counters, which cover the whole cell."""
    inc = counter_increase(metrics)
    if valid.empty:  # nothing valid to explain (e.g. every cell failed): no rows, same columns
        return valid[KEYS].assign(
            prompt_tokens=pd.Series(dtype=float), cached_tokens=pd.Series(dtype=float)
        )
    out = valid[KEYS].merge(token_totals(turns_ok), on=KEYS, how="left")
    cell = token_totals(turns_ok if turns_cell_ok is None else turns_cell_ok)
    out = out.merge(cell[KEYS + ["prompt_tokens"]].rename(
        columns={"prompt_tokens": "cell_prompt_tokens"}), on=KEYS, how="left")
    for part in (_counter_totals(inc), offload_bytes(inc), _gauge_summary(metrics)):
        if len(part.columns) > len(KEYS):
            out = out.merge(part, on=KEYS, how="left")
    for c in ("prefix_hits", "external_hits", "preemptions", "kv_usage_mean", "kv_usage_max"):
        if c not in out:
            out[c] = np.nan
    out = _log_bytes(out, valid)
    out["cached_frac"] = out["cached_tokens"] / out["prompt_tokens"]
    out["prefix_hit_rate"] = out["prefix_hits"] / out["cell_prompt_tokens"]
    out["external_hit_rate"] = out["external_hits"] / out["cell_prompt_tokens"]
    return out


def _log_bytes(out: pd.DataFrame, valid: pd.DataFrame) -> pd.DataFrame:
    """Bytes each way from the policy's own log (``records.LOG_COUNTS``: LMCache's stores and
    retrieves) for the cells whose Prometheus samples had none."""
    cols = {"log_bytes_offload": "bytes_offload", "log_bytes_onload": "bytes_onload"}
    if not set(cols) <= set(valid.columns):
        return out
    logged = out[KEYS].merge(valid[KEYS + list(cols)], on=KEYS, how="left")
    for src, dst in cols.items():
        mine = logged[src].astype(float).to_numpy()
        out[dst] = out[dst].fillna(pd.Series(mine, index=out.index)) if dst in out else mine
    return out


LOG_COLUMNS = ["lookups", "lookups_lost", "lost_share", "lookups_above_engine",
               "tokens_looked_up", "tokens_engine_had",
               "tokens_hit", "tokens_stored", "bytes_stored", "store_s", "tokens_retrieved",
               "bytes_retrieved", "evictions"]


def log_table(valid: pd.DataFrame) -> pd.DataFrame:
    """One row per valid cell that kept what its policy's log said (``records.LOG_COUNTS``:
    LMCache's lookups, stores, retrieves, evictions); ``lost_share`` is the share of lookups
    where the tier had lost a prefix the engine still held (its first chunk gone)."""
    if "log_counts" not in valid or not valid["log_counts"].notna().any():
        return pd.DataFrame(columns=KEYS + LOG_COLUMNS)
    have = valid[valid["log_counts"].notna()]
    counts = pd.DataFrame(list(have["log_counts"]), index=have.index)
    out = pd.concat([have[KEYS], counts.reindex(columns=LOG_COLUMNS)], axis=1)
    out["lost_share"] = out["lookups_lost"] / out["lookups"].where(out["lookups"] > 0)
    return out.reset_index(drop=True)


def _span(jobs: pd.DataFrame) -> pd.Series:
    return jobs.groupby(KEYS)["end_s"].max().rename("end_s")


def _outside(t: pd.Series, end: pd.Series, slack_s: float) -> pd.Series:
    return (t < -slack_s) | (t > 2 * end + slack_s)


def clock_outliers(metrics: pd.DataFrame, jobs: pd.DataFrame, slack_s: float = 600.0
                   ) -> pd.DataFrame:
    """Cells with metric samples far outside the cell's time span (t_s should be relative to
    the client's t0, like the jobs' times): such samples sort out of place and would bias
    counter increases. Returns KEYS, n (samples outside), t_min, t_max, end_s."""
    cols = KEYS + ["n", "t_min", "t_max", "end_s"]
    if metrics.empty or jobs.empty:
        return pd.DataFrame(columns=cols)
    m = metrics.merge(_span(jobs).reset_index(), on=KEYS)
    bad = m[_outside(m["t_s"], m["end_s"], slack_s)]
    if bad.empty:
        return pd.DataFrame(columns=cols)
    g = bad.groupby(KEYS)
    out = pd.DataFrame({"n": g.size(), "t_min": g["t_s"].min(), "t_max": g["t_s"].max(),
                        "end_s": g["end_s"].first()})
    return out.reset_index()[cols]


def drop_clock_outliers(metrics: pd.DataFrame, jobs: pd.DataFrame, slack_s: float = 600.0
                        ) -> pd.DataFrame:
    """metrics without the samples clock_outliers finds (increases then start at the first
    sample inside the cell)."""
    if metrics.empty or jobs.empty:
        return metrics
    end = metrics.merge(_span(jobs).reset_index(), on=KEYS, how="left")["end_s"]
    keep = ~_outside(metrics["t_s"].reset_index(drop=True), end, slack_s).fillna(False)
    return metrics.reset_index(drop=True)[keep.to_numpy()]
