"""A synthetic sweep folder that follows docs/records.md exactly, for tests and the benchmark.

The latency model is made up, but it draws the seed's three shapes (section 3): FCFS grows
linearly with the turn, Continuum has a T1/T2 admission spike then a flat tail, LMCache is
flat until the load passes the GPU's capacity and then hits a wall at the later turns.
Faults (a failed cell, a lagging client, a cell without DONE, a missing cell, failed jobs)
can be injected per cell so that the analysis can be tested on them.

    python -m analysis.synth OUT_DIR [--jobs N] [--turn-rows N]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness import records
from harness.cellkey import CellKey

log = logging.getLogger(__name__)

FAULTS = ("failed", "lag", "unfinished", "missing", "nodata", "jobs_failed", "no_metrics")
TURNS_SCHEMA, JOBS_SCHEMA, METRICS_SCHEMA = records.TURNS, records.JOBS, records.METRICS

CAPACITY_JPS = {"h200": 8.0, "h100": 5.0, "a100": 3.0, "l40s": 2.5, "cpu": 1.5}
CACHED_FRACTION = {"fcfs": 0.12, "continuum": 0.9, "lmcache": 0.6, "native_offload": 0.3}
BYTES_PER_TOKEN = 131072  # Llama-3.1-8B bf16: 32 layers x 8 KV heads x 128 x 2 x 2 bytes


@dataclass
class SynthSpec:
    """What to build. `faults` maps a cell (a CellKey; see :func:`key`) to one of FAULTS."""

    name: str = "synth"
    date: str = "20260101"
    gpus: tuple[str, ...] = ("h200", "h100")
    drams: tuple[int, ...] = (400, 64)
    policies: tuple[str, ...] = ("fcfs", "lmcache", "continuum")
    scheds: tuple[str, ...] = ("fcfs",)
    jps: tuple[float, ...] = (1.0, 3.0, 6.0, 10.0, 15.0)
    n_jobs: int = 40
    n_turns: int = 8
    seed: int = 42
    scrape_s: float = 1.0
    faults: dict[CellKey, str] = field(default_factory=dict)  # or (gpu, dram, policy, jps)

    def __post_init__(self) -> None:  # (gpu, dram, policy, jps) tuples name cells too
        self.faults = {k if isinstance(k, CellKey) else key(*k): v for k, v in self.faults.items()}

    def cells(self) -> list[CellKey]:
        return [
            CellKey(gpu=g, dram=d, policy=p, sched=s, jps=float(j))
            for g in self.gpus
            for d in self.drams
            for p in self.policies
            for s in self.scheds
            for j in self.jps
        ]


def key(gpu: str, dram: int, policy: str, jps: float, sched: str = "fcfs") -> CellKey:
    """Shorthand for a cell of a synthetic sweep."""
    return CellKey(gpu=gpu, dram=dram, policy=policy, sched=sched, jps=float(jps))


def cell_dir(sweep: Path, key: CellKey) -> Path:
    return sweep / key.rel_dir


def _load(key: CellKey) -> float:
    return key.jps / CAPACITY_JPS.get(key.gpu, 4.0)


def _turn_multiplier(key: CellKey, turns: np.ndarray) -> np.ndarray:
    """Latency relative to the unloaded prefill time, per turn (1..T): the policy's shape."""
    d, p = key.dram, key.policy
    load = _load(key)
    t = turns.astype(float)
    if p == "fcfs":  # program order serves returning turns first: less growth per turn
        return 1.0 + (0.2 if key.sched == "program" else 0.45) * load * t
    if p == "continuum":
        return 1.0 + load * np.where(t <= 2, 3.0, 0.3)
    if p in ("lmcache", "native_offload"):
        wall = max(0.0, load - 1.2) * 0.35
        small_dram = 1.25 if d < 100 else 1.0
        return small_dram * (1.0 + 0.35 * load) * (1.0 + wall * np.maximum(0.0, t - 3) ** 2)
    return 1.0 + 0.3 * load * t


def _job_arrays(spec: SynthSpec, key: CellKey, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, T = spec.n_jobs, spec.n_turns
    arrivals = np.cumsum(rng.exponential(1.0 / key.jps, size=n))
    turns = np.arange(1, T + 1)
    tool_tokens = rng.choice([1024, 1280, 1536, 1792, 2048, 2304, 2560], size=(n, T))
    prompt = 1600 + np.cumsum(np.where(turns == 1, 0, tool_tokens + 20), axis=1)
    base = 0.25 + prompt / 30000.0
    drift = 1.0 + 0.5 * min(_load(key), 3.0) * (np.arange(n) / max(n - 1, 1))[:, None]
    noise = rng.lognormal(0.0, 0.2, size=(n, T))
    latency = base * _turn_multiplier(key, turns)[None, :] * drift * noise
    tool = np.where(turns == T, 0.0, 0.5)[None, :].repeat(n, axis=0)
    lag = np.abs(rng.normal(0.0, 0.002, size=n))
    step = latency + tool
    sent = (arrivals + lag)[:, None] + np.cumsum(step, axis=1) - step
    frac = CACHED_FRACTION.get(key.policy, 0.2) / (1.0 + 0.1 * _load(key))
    prev = np.concatenate([np.zeros((n, 1)), prompt[:, :-1]], axis=1)
    cached = (prev * frac * rng.uniform(0.8, 1.0, size=(n, T))).astype(np.int64) // 16 * 16
    return {
        "arrivals": arrivals,
        "lag": lag,
        "latency": latency,
        "ttft": latency * 0.92,
        "sent": sent,
        "tool": tool,
        "prompt": prompt,
        "cached": cached,
    }


def _failed_jobs(spec: SynthSpec, fault: str | None) -> np.ndarray:
    failed = np.zeros(spec.n_jobs, dtype=bool)
    if fault == "jobs_failed":
        failed[spec.n_jobs // 2 :: max(spec.n_jobs // 4, 1)] = True
    return failed


def _turns_table(spec: SynthSpec, a: dict[str, np.ndarray], failed: np.ndarray) -> pa.Table:
    n, T = spec.n_jobs, spec.n_turns
    fail_turn = np.where(failed, T // 2 + 1, T + 1)[:, None]
    turn = np.broadcast_to(np.arange(1, T + 1), (n, T))
    status = np.where(turn < fail_turn, "ok", np.where(turn == fail_turn, "error", "not_sent"))
    ok = status == "ok"
    sent = np.where(status == "not_sent", np.nan, a["sent"])
    first = np.where(ok, a["sent"] + a["ttft"], np.nan)
    last = np.where(status == "not_sent", np.nan, a["sent"] + a["latency"])
    cols = {
        "job_id": np.repeat(np.arange(n), T),
        "turn": turn.ravel(),
        "n_turns": np.full(n * T, T),
        "arrival_s": np.repeat(a["arrivals"], T),
        "sent_s": sent.ravel(),
        "first_token_s": first.ravel(),
        "last_token_s": last.ravel(),
        "latency_s": (last - sent).ravel(),
        "ttft_s": (first - sent).ravel(),
        "prompt_tokens": a["prompt"].ravel(),
        "server_prompt_tokens": np.where(ok, a["prompt"], np.nan).ravel(),
        "cached_tokens": np.where(ok, a["cached"], np.nan).ravel(),
        "completion_tokens": np.where(ok, 20, 0).ravel(),
        "tool_s": a["tool"].ravel(),
        "retries": np.zeros(n * T),
        "status": status.ravel(),
        "error": np.where(status == "error", "server disconnected", "").ravel(),
        "priority": np.full(n * T, np.nan),  # no request priority in the synthetic sweep
    }
    arrays = [pa.array(cols[f.name], type=f.type, from_pandas=True) for f in TURNS_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=TURNS_SCHEMA)
    error = table["error"]  # null when ok (docs/records.md)
    return table.set_column(TURNS_SCHEMA.get_field_index("error"), "error",
                            pc.if_else(pc.equal(error, ""), pa.scalar(None, pa.string()), error))


def _jobs_table(spec: SynthSpec, a: dict[str, np.ndarray], failed: np.ndarray) -> pa.Table:
    T = spec.n_turns
    end = a["sent"][:, -1] + a["latency"][:, -1]
    fail_end = a["sent"][:, T // 2] + a["latency"][:, T // 2]
    end = np.where(failed, fail_end, end)
    cols = {
        "job_id": np.arange(spec.n_jobs),
        "arrival_s": a["arrivals"],
        "start_s": a["arrivals"] + a["lag"],
        "lag_s": a["lag"],
        "end_s": end,
        "jct_s": np.where(failed, np.nan, end - a["arrivals"]),
        "n_turns": np.full(spec.n_jobs, T),
        "turns_done": np.where(failed, T // 2, T),
        "status": np.where(failed, "failed", "ok"),
    }
    arrays = [pa.array(cols[f.name], type=f.type, from_pandas=True) for f in JOBS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=JOBS_SCHEMA)


def _labels(**extra: str) -> str:
    return json.dumps({"engine": "0", "model_name": "model", **extra}, sort_keys=True)


def _metrics_table(spec: SynthSpec, key: CellKey, a: dict[str, np.ndarray]) -> pa.Table:
    end_s = float(np.max(a["sent"][:, -1] + a["latency"][:, -1]))
    t = np.arange(0.0, end_s + spec.scrape_s, spec.scrape_s)
    done_at = (a["sent"] + a["latency"]).ravel()
    order = np.argsort(done_at)
    done_sorted = done_at[order]
    counted = np.searchsorted(done_sorted, t, side="right")

    def cum(values: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(values.ravel()[order])])
        return c[counted]

    active = np.searchsorted(np.sort(a["arrivals"]), t) - counted / spec.n_turns
    usage = np.clip(active / (40.0 * CAPACITY_JPS.get(key.gpu, 4.0) / 4.0), 0.0, 1.0)
    series = [
        ("vllm:prefix_cache_queries_total", _labels(), cum(a["prompt"] * 3.0)),
        ("vllm:prefix_cache_hits_total", _labels(), cum(a["cached"])),
        ("vllm:num_preemptions_total", _labels(), np.floor(cum(a["latency"]) * 0.02 * _load(key))),
        ("vllm:kv_cache_usage_perc", _labels(), usage),
        ("vllm:num_requests_running", _labels(), np.minimum(active, 32.0)),
        ("vllm:num_requests_waiting", _labels(), np.maximum(active - 32.0, 0.0)),
        ("vllm:prefix_cache_hits_created", _labels(), np.full(t.size, 1.7e9)),
    ]
    if key.policy in ("lmcache", "native_offload"):
        name = "vllm:kv_offload_total_bytes_total"
        moved = cum(a["prompt"] * BYTES_PER_TOKEN)
        series.append((name, _labels(transfer_type="GPU_to_CPU"), moved))
        back = cum(a["cached"] * BYTES_PER_TOKEN * 0.5)
        series.append((name, _labels(transfer_type="CPU_to_GPU"), back))
    k = len(series)
    return pa.table(
        {
            "t_s": np.tile(t, k),
            "name": np.repeat([s[0] for s in series], t.size),
            "labels": np.repeat([s[1] for s in series], t.size),
            "value": np.concatenate([s[2] for s in series]).astype(float),
        },
        schema=METRICS_SCHEMA,
    )


def _manifest(spec: SynthSpec, key: CellKey, a: dict[str, np.ndarray],
              fault: str | None) -> records.Manifest:
    lag = a["lag"]
    lag_flag = fault == "lag"
    return records.Manifest(
        cell=key,
        workload={"n_jobs": spec.n_jobs, "n_turns": spec.n_turns, "seed": spec.seed},
        status="failed" if fault == "failed" else "ok",
        error="server died (synthetic)" if fault == "failed" else None,
        client=records.ClientSummary(
            lag_p50_s=float(np.median(lag)),
            lag_p99_s=0.9 if lag_flag else float(np.quantile(lag, 0.99)),
            lag_max_s=1.5 if lag_flag else float(lag.max()),
            lag_flag=lag_flag,
            t0_unix=1767225600.0,
        ),
        engine=records.EngineInfo("synthetic", "0", "0"),
        times={"start_unix": 1767225600.0},
    )


def write_cell(spec: SynthSpec, sweep: Path, key: CellKey, rng: np.random.Generator) -> None:
    fault = spec.faults.get(key)
    if fault == "missing":
        return
    out = cell_dir(sweep, key)
    out.mkdir(parents=True, exist_ok=True)
    a = _job_arrays(spec, key, rng)
    _manifest(spec, key, a, fault).write(out)
    if fault == "nodata":
        records.write_json({"jobs_done": 0, "jobs_total": spec.n_jobs}, out / records.PROGRESS)
        return
    failed = _failed_jobs(spec, fault)
    records.write_parquet(_turns_table(spec, a, failed), out / "turns.parquet")
    records.write_parquet(_jobs_table(spec, a, failed), out / "jobs.parquet")
    if fault != "no_metrics":
        records.write_parquet(_metrics_table(spec, key, a), out / "metrics.parquet")
    if fault not in ("unfinished", "failed"):  # only ok cells get DONE (docs/records.md)
        records.write_text("ok\n", out / records.DONE)


def build(spec: SynthSpec, root: Path) -> Path:
    """Write the sweep under root/<date>_<name>/ and return its path."""
    unknown = {f for f in spec.faults.values() if f not in FAULTS}
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; allowed: {', '.join(FAULTS)}")
    sweep = Path(root) / f"{spec.date}_{spec.name}"
    sweep.mkdir(parents=True, exist_ok=True)
    matrix = {
        "gpu": list(spec.gpus),
        "dram": list(spec.drams),
        "policy": list(spec.policies),
        "sched": list(spec.scheds),
        "jps": [float(j) for j in spec.jps],
    }
    records.write_json({"name": spec.name, "matrix": matrix, "created": "2026-01-01T00:00:00Z"},
                sweep / "sweep.json")
    rng = np.random.default_rng(spec.seed)
    for key in spec.cells():
        write_cell(spec, sweep, key, rng)
    log.info("synthetic sweep %s: %d cells, %d jobs each", sweep, len(spec.cells()), spec.n_jobs)
    return sweep


def spec_for_turn_rows(turn_rows: int, **kw) -> SynthSpec:
    """A full seed-shaped matrix (2 GPUs x 2 DRAM x 3 policies x 5 JPS) of about turn_rows."""
    spec = SynthSpec(**kw)
    spec.n_jobs = max(1, round(turn_rows / (len(spec.cells()) * spec.n_turns)))
    return spec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder that receives <date>_<name>/")
    ap.add_argument("--jobs", type=int, default=40, help="jobs per cell")
    ap.add_argument("--turn-rows", type=int, help="size the sweep by total turn rows instead")
    ap.add_argument("--name", default="synth")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = (spec_for_turn_rows(args.turn_rows, name=args.name) if args.turn_rows
            else SynthSpec(name=args.name, n_jobs=args.jobs))
    print(build(spec, args.out))


if __name__ == "__main__":
    main()
