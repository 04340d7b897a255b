"""Arrow schemas of the records (documented in docs/records.md) and atomic writers.

Every file is written to ``.<name>.tmp`` in the same folder and renamed into place, so a
reader never sees half a file and a kill leaves at most a hidden temporary.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TURNS = pa.schema(
    [
        ("job_id", pa.int32()), ("turn", pa.int16()), ("n_turns", pa.int16()),
        ("arrival_s", pa.float64()), ("sent_s", pa.float64()), ("first_token_s", pa.float64()),
        ("last_token_s", pa.float64()), ("latency_s", pa.float64()), ("ttft_s", pa.float64()),
        ("prompt_tokens", pa.int32()), ("server_prompt_tokens", pa.int32()),
        ("cached_tokens", pa.int32()), ("completion_tokens", pa.int32()),
        ("tool_s", pa.float64()), ("retries", pa.int16()), ("status", pa.string()),
        ("error", pa.string()),
    ]
)  # fmt: skip

JOBS = pa.schema(
    [
        ("job_id", pa.int32()), ("arrival_s", pa.float64()), ("start_s", pa.float64()),
        ("lag_s", pa.float64()), ("end_s", pa.float64()), ("jct_s", pa.float64()),
        ("n_turns", pa.int16()), ("turns_done", pa.int16()), ("status", pa.string()),
    ]
)  # fmt: skip

METRICS = pa.schema(
    [("t_s", pa.float64()), ("name", pa.string()), ("labels", pa.string()), ("value", pa.float64())]
)


DONE = "DONE"  # the completion marker, written last


def is_done(cell_dir: Path) -> bool:
    return (Path(cell_dir) / DONE).exists()


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def turn_rows(turns) -> list[dict[str, Any]]:
    rows = []
    for t in turns:
        r = asdict(t)
        r["latency_s"] = _diff(t.last_token_s, t.sent_s) if t.status == "ok" else None
        r["ttft_s"] = _diff(t.first_token_s, t.sent_s)
        rows.append(r)
    return rows


def job_rows(jobs) -> list[dict[str, Any]]:
    rows = []
    for j in jobs:
        r = asdict(j)
        r["lag_s"] = _diff(j.start_s, j.arrival_s)
        r["jct_s"] = _diff(j.end_s, j.arrival_s) if j.status == "ok" else None
        rows.append(r)
    return rows


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_table(rows: list[dict] | dict[str, list], schema: pa.Schema, path: Path) -> Path:
    if isinstance(rows, dict):
        table = pa.Table.from_pydict(rows, schema=schema)
    else:
        table = pa.Table.from_pylist(rows, schema=schema)
    tmp = tmp_path(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_json(obj: Any, path: Path) -> Path:
    tmp = tmp_path(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text(text: str, path: Path) -> Path:
    tmp = tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
