"""kvbench's own workload files (``workloads.io``: parquet or JSONL, one row per job with its
token ids, tool times and, where known, per-turn outputs and tool names). A replay sends the
recorded ids as they are (``workloads.sources``); as sessions (tool-time distributions) a
file gives its jobs' sizes, tool times and tool names."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from workloads import io
from workloads.traces.session import Session

NAME = "kvbench"


def matches(path: Path) -> bool:
    if path.suffix == ".parquet":
        return "first_prompt" in pq.read_schema(path).names
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        return True  # an empty workload file: refused as holding no jobs
    row = json.loads(first)
    return isinstance(row, dict) and ("_meta" in row or "first_prompt" in row)


def read(files: list[Path]) -> list[Session]:
    out = []
    for path in files:
        for j in io.load(path).jobs:
            outputs = tuple(j.output_tokens(t) for t in range(1, j.n_turns + 1))
            out.append(Session(f"{path.name}/{j.job_id}", j.arrival_s, len(j.first_prompt),
                               tuple(len(t) for t in j.tool_outputs), outputs, j.tool_s,
                               j.tool_names or ("",) * len(j.tool_s)))  # fmt: skip
    return out
