"""The LMCache agentic traces (Hugging Face ``sammshen/lmcache-agentic-traces``, MIT): parquet
shards, one row per LLM call, rows of a session in call order.

Columns read: ``session_id``; ``input``, the call's whole cumulative OpenAI-format message list
(``role``, ``content``, ``tool_calls[].function.name/arguments``, ``tool_call_id``, ``name``);
``output_length``, the completion tokens; ``pre_gap``, seconds from the previous call's last
streamed token to this call (tool execution plus any think time). The trace records no
session start, so its jobs arrive by ``workload.arrival=poisson`` only.

What kvbench takes per call k+1 of a session: the messages past call k's (the first one, the
assistant's reply, is call k's output, already in the replayed prompt; the others are
appended), their token count, call k's ``output_length``, call k+1's ``pre_gap`` as the gap,
and the first tool the reply called as the gap's tool (``user`` when a user message follows
instead). Tokens are estimated, not tokenized: ceil(characters / 4) per message, counting
its content and its tool calls' names and arguments. A call whose messages do not extend the
previous call's (another session, or a rewritten history) starts a new job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.traces.session import USER, Builder, Session

NAME = "lmcache_agentic"
COLUMNS = ["session_id", "input", "output_length", "pre_gap"]
CHARS_PER_TOKEN = 4


def matches(path: Path) -> bool:
    names = set(pq.read_schema(path).names)
    return {"input", "output_length"} <= names


def read(files: list[Path]) -> list[Session]:
    out: list[Session] = []
    walk = _Walk(out)
    for path in files:
        missing = set(COLUMNS) - set(pq.read_schema(path).names)
        if missing:
            raise ValueError(f"{path.name} lacks the column(s) {', '.join(sorted(missing))}")
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=COLUMNS):
            walk.batch(batch)
    walk.flush()
    return out


class _Walk:
    """Turns rows into sessions, keeping the previous row's per-message sizes."""

    def __init__(self, out: list[Session]) -> None:
        self.out = out
        self.cur: Builder | None = None
        self.prev: np.ndarray = np.zeros(0, dtype=np.int64)
        self.sid: str | None = None
        self.splits: dict[str, int] = {}

    def batch(self, batch: pa.RecordBatch) -> None:
        msgs = batch.column("input")
        flat = msgs.flatten()
        fields = dict(zip([f.name for f in flat.type], flat.flatten(), strict=True))
        chars = _chars(fields, len(flat))
        roles = fields["role"].to_numpy(zero_copy_only=False)
        offsets = np.asarray(msgs.offsets) - msgs.offsets[0].as_py()
        sids = batch.column("session_id").to_pylist()
        outs = batch.column("output_length").to_pylist()
        gaps = batch.column("pre_gap").to_pylist()
        for r, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            self.row(str(sids[r]), chars[lo:hi], _Msgs(fields, roles, int(lo), int(hi)),
                     int(outs[r] or 1), float(gaps[r] or 0.0))  # fmt: skip

    def row(self, sid: str, chars: np.ndarray, msgs: _Msgs, output: int, gap: float) -> None:
        n = len(self.prev)
        if self.cur is not None and sid == self.sid and _extends(self.prev, chars):
            skip = n + 1 if msgs.role(n) == "assistant" else n
            self.cur.add(_tokens(chars[skip:]), gap, msgs.tool_after(n), output)
        else:
            self.flush()
            k = self.splits[sid] = self.splits.get(sid, 0) + 1
            key = sid if k == 1 else f"{sid}#{k}"
            self.cur = Builder(key, None, _tokens(chars), [output])
        self.sid, self.prev = sid, chars

    def flush(self) -> None:
        if self.cur is not None:
            self.out.append(self.cur.build())
        self.cur = None


class _Msgs:
    """One row's messages, read one at a time where sizes are not enough."""

    def __init__(self, fields: dict[str, pa.Array], roles: np.ndarray, lo: int, hi: int) -> None:
        self.fields, self.roles, self.lo, self.hi = fields, roles, lo, hi

    def role(self, i: int) -> str:
        return str(self.roles[self.lo + i]) if self.lo + i < self.hi else ""

    def tool_after(self, i: int) -> str:
        """The tool the assistant's reply at message ``i`` called, else what came next."""
        for j in range(self.lo + i, self.hi):
            for name in self._names(j):
                return name
            if self.roles[j] == "user":
                return USER
        return ""

    def _names(self, j: int) -> Iterator[str]:
        calls = self.fields.get("tool_calls")
        for call in (calls[j].as_py() if calls is not None else None) or []:
            name = (call.get("function") or {}).get("name")
            if name:
                yield str(name)
        if self.roles[j] == "tool" and "name" in self.fields:
            name = self.fields["name"][j].as_py()
            if name:
                yield str(name)


def _chars(fields: dict[str, pa.Array], n: int) -> np.ndarray:
    """Characters per message: its content and its tool calls' names and arguments."""
    out = pc.fill_null(pc.utf8_length(fields["content"]), 0).to_numpy().astype(np.int64)
    calls = fields.get("tool_calls")
    if calls is None or not len(calls.flatten()):
        return out
    size = np.zeros(len(calls.flatten()), dtype=np.int64)
    for part in _function(calls).values():
        size += pc.fill_null(pc.utf8_length(part), 0).to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(calls).to_numpy()
    return out + np.bincount(parents, weights=size, minlength=n).astype(np.int64)


def _function(calls: pa.Array) -> dict[str, pa.Array]:
    """The tool calls' ``function.name`` and ``function.arguments``, one entry per call."""
    items = calls.flatten()
    parts = dict(zip([f.name for f in items.type], items.flatten(), strict=True))
    fn = parts.get("function")
    if fn is None:
        return {}
    sub = dict(zip([f.name for f in fn.type], fn.flatten(), strict=True))
    return {k: v for k, v in sub.items() if k in ("name", "arguments")}


def _extends(prev: np.ndarray, cur: np.ndarray) -> bool:
    return len(cur) > len(prev) and bool(np.array_equal(cur[: len(prev)], prev))


def _tokens(chars: np.ndarray) -> int:
    return int(((chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN).sum())
