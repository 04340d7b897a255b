"""Write and read a workload (parquet or JSONL), so a run can be replayed: one row per job
with its token ids, times and, where known, per-turn outputs and tool names. A workload file
is written by ``python -m launch workload --out FILE [overrides ...]`` and replayed by
``workload.trace=FILE`` (format ``kvbench``; other agent traces have readers of their own in
``workloads.traces``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.job import JobSpec, Workload

SUFFIXES = (".parquet", ".jsonl")
SCHEMA = pa.schema(
    [
        ("job_id", pa.int32()),
        ("arrival_s", pa.float64()),
        ("first_prompt", pa.list_(pa.int32())),
        ("tool_outputs", pa.list_(pa.list_(pa.int32()))),
        ("tool_s", pa.list_(pa.float64())),
        ("completion_tokens", pa.int32()),
        ("completions", pa.list_(pa.int32())),  # per turn; [] : completion_tokens each turn
        ("tool_names", pa.list_(pa.string())),  # per gap; [] : unnamed (files before them too)
    ]
)


def _rows(w: Workload) -> list[dict]:
    return [
        {
            "job_id": j.job_id,
            "arrival_s": j.arrival_s,
            "first_prompt": list(j.first_prompt),
            "tool_outputs": [list(t) for t in j.tool_outputs],
            "tool_s": list(j.tool_s),
            "completion_tokens": j.completion_tokens,
            "completions": list(j.completions),
            "tool_names": list(j.tool_names),
        }
        for j in w.jobs
    ]


def save(w: Workload, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    meta = {"jps": w.jps, "seed": w.seed, **w.meta}
    if path.suffix == ".jsonl":
        with open(tmp, "w") as f:
            f.write(json.dumps({"_meta": meta}) + "\n")
            for r in _rows(w):
                f.write(json.dumps(r) + "\n")
    else:
        table = pa.Table.from_pylist(_rows(w), schema=SCHEMA)
        table = table.replace_schema_metadata({"kvbench": json.dumps(meta)})
        pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _job(r: dict) -> JobSpec:
    return JobSpec(
        job_id=int(r["job_id"]),
        arrival_s=float(r["arrival_s"]),
        first_prompt=tuple(r["first_prompt"]),
        tool_outputs=tuple(tuple(t) for t in r["tool_outputs"]),
        tool_s=tuple(float(x) for x in r["tool_s"]),
        completion_tokens=int(r["completion_tokens"]),
        completions=tuple(int(x) for x in r.get("completions") or ()),
        tool_names=tuple(str(x) for x in r.get("tool_names") or ()),
    )


def load(path: str | Path) -> Workload:
    path = Path(path)
    if path.suffix == ".jsonl":
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        meta = lines[0].pop("_meta") if lines and "_meta" in lines[0] else {}
        rows = [r for r in lines if r]
    else:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(b"kvbench", b"{}")
        meta = json.loads(raw)
        rows = table.to_pylist()
    jobs = sorted((_job(r) for r in rows), key=lambda j: j.arrival_s)
    meta = {**meta, "source": str(path)}
    jps, seed = float(meta.get("jps", 0.0)), int(meta.get("seed", -1))
    return Workload(jobs=jobs, jps=jps, seed=seed, meta=meta)
