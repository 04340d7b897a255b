"""Per-cell table of a sweep folder for docs/validation/: JCT (mean, p50, p90), per-turn latency
and last/first turn, cached-token share, preemptions, offload bytes, client lag p99, from the
cell records alone (turns/jobs/metrics parquet). Counters are taken as max minus min over the
cell's scrapes, so cells that share a server (cluster.share_server) are not double-counted.

    python scripts/device/cell_table.py results/<sweep>

(A page's table of cells is `python -m analysis cells`, the report's own figures; this script
also shows the plugins' counters, the server sharing and cache resets, for a look at a lease's
cells.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from harness.cellkey import iter_cell_dirs


def counter(m: pd.DataFrame, name: str, label: str | None = None) -> dict[str, float]:
    """Increase over the cell of a counter, per value of one label (or '' for the sum).

    Counters only grow while one server lives, so the increase is max - min over the cell's
    scrapes, whatever their timestamps (before 7889579 the scrape taken before the client's
    clock started was stamped with the raw perf_counter, i.e. hundreds of seconds, not ~0)."""
    s = m[m.name == name]
    if s.empty:
        return {}
    out: dict[str, float] = {}
    for lab, g in s.groupby("labels"):
        key = json.loads(lab).get(label, "") if label else ""
        out[key] = out.get(key, 0.0) + float(g.value.max() - g.value.min())
    return out


def gauge_max(m: pd.DataFrame, name: str) -> float | None:
    s = m[m.name == name]
    return float(s.value.max()) if not s.empty else None


def cell_row(d: Path) -> dict:
    man = json.loads((d / "manifest.json").read_text())
    c = man["cell"]
    row = {"dram": c["dram"], "policy": c["policy"], "sched": c.get("sched", "fcfs"),
           "jps": c["jps"], "status": man["status"]}
    if not (d / "jobs.parquet").exists():
        row["note"] = ((man.get("error") or "").splitlines() or [""])[0][:80]
        return row
    jobs, turns = pd.read_parquet(d / "jobs.parquet"), pd.read_parquet(d / "turns.parquet")
    m = pd.read_parquet(d / "metrics.parquet")
    ok, tok = jobs[jobs.status == "ok"], turns[turns.status == "ok"]
    row.update(
        n_jobs=len(jobs), jobs_ok=len(ok), jct_mean_s=ok.jct_s.mean(),
        jct_p50_s=ok.jct_s.median(), jct_p90_s=ok.jct_s.quantile(0.9),
    )  # fmt: skip
    per_turn = tok.groupby("turn").latency_s.mean()
    for t, v in per_turn.items():
        row[f"T{t}"] = v
    if len(per_turn) > 1:
        row["Tlast_T1"] = per_turn.iloc[-1] / per_turn.iloc[0]
    row["client_lag_p99_s"] = (man.get("client") or {}).get("lag_p99_s")
    row["cached_share"] = tok.cached_tokens.sum() / max(tok.server_prompt_tokens.sum(), 1)
    row["prompt_tokens"] = int(tok.server_prompt_tokens.sum())
    row["preemptions"] = sum(counter(m, "vllm:num_preemptions_total").values())
    row["kv_usage_max"] = gauge_max(m, "vllm:kv_cache_usage_perc")
    row["waiting_max"] = gauge_max(m, "vllm:num_requests_waiting")
    off = counter(m, "vllm:kv_offload_total_bytes_total", "transfer_type")
    plug = {k: sum(counter(m, f"kvbench:{k}_total").values())
            for k in ("offload_bytes", "prefetch_bytes", "late_load_bytes", "pins_created",
                      "pins_released_pressure", "pins_expired", "prefetch_late", "prefetch_hits")}
    to_host = sum(v for k, v in off.items() if k.lower().startswith("gpu")) + plug["offload_bytes"]
    to_dev = sum(v for k, v in off.items() if k.lower().startswith("cpu")) \
        + plug["prefetch_bytes"] + plug["late_load_bytes"]
    row["offload_gb_to_host"] = to_host / 1e9
    row["offload_gb_to_gpu"] = to_dev / 1e9
    ext = counter(m, "vllm:external_prefix_cache_hits_total")
    row["external_hit_tokens"] = sum(ext.values()) if ext else 0.0
    row.update({f"plugin_{k}": v for k, v in plug.items() if v and not k.endswith("bytes")})
    reset = man.get("server", {}).get("cache_reset")
    row["server_shared"] = man.get("server", {}).get("shared")
    row["cache_reset"] = bool(reset and reset.get("ok"))
    return row


def table(sweep: Path) -> pd.DataFrame:
    rows = [
        cell_row(d)
        for d, _ in iter_cell_dirs(sweep)
        if (d / "manifest.json").exists()
    ]
    return (
        pd.DataFrame(rows)
        .sort_values(["dram", "jps", "policy", "sched"], ascending=[False, True, True, True])
        .reset_index(drop=True)
    )


if __name__ == "__main__":
    df = table(Path(sys.argv[1]))
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 60)
    print(df.round(2).to_string())
