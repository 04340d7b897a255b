"""TraceLab (``uw-syfi/TraceLab``, dataset CC BY 4.0): Claude Code and Codex sessions as JSONL
(or the release's ``.jsonl.gz``), one row per LLM round.

Fields read per round: ``session_id`` (with ``project``: the key), ``round_index`` (order,
file order breaking ties), ``input_tokens_total`` (= ``prefix_tokens`` +
``newly_append_tokens``), ``output_tokens``, ``timing_events[]`` (``event_type``,
``timestamp``) and ``tools[]`` (``tool_name``, ``emitted_at``, ``tool_wall_latency_ms``,
``tool_internal_latency_ms``).

What kvbench takes: the first round's ``input_tokens_total`` as the first prompt; per later
round the growth of ``input_tokens_total`` less the previous round's output (the tool results
and user text appended; 0 where the provider dropped part of the output, e.g. reasoning, from
the next prompt; ``newly_append_tokens`` is the provider's cache miss, not the growth); each
round's ``output_tokens``. The gap after round k runs from its output's last event
(``reasoning``, ``text``, ``tool_call``) to round k+1's input being ready (its last
``user_message`` or ``tool_result`` event); without timestamps, the longest of round k's tool
latencies (``tool_internal_latency_ms`` where present, else ``tool_wall_latency_ms``, as
TraceLab's own analyses do). The gap's tool is the one of round k that finished last; ``user``
when round k called none and round k+1 starts with a user message. A session starts when its
first request was sent; a round whose prompt is smaller than the previous one's (a compacted
history) starts a new job; a round without ``input_tokens_total`` is left out.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workloads.traces.session import USER, Builder, Session

NAME = "tracelab"
INPUT = frozenset({"user_message", "tool_result"})
OUTPUT = frozenset({"reasoning", "text", "tool_call"})


@dataclass(frozen=True)
class Round:
    total: int  # input_tokens_total
    output: int
    t_in: float | None  # its input was ready (epoch s)
    t_out: float | None  # its output's last event
    tool: str  # the tool that finished last ("" none)
    tool_s: float  # the longest tool latency (s), for rounds without timestamps
    user: bool  # its input holds a user message


def matches(path: Path) -> bool:
    first = next(_rows([path]), None)
    return first is not None and "input_tokens_total" in first


def read(files: list[Path]) -> list[Session]:
    by_key: dict[str, list[tuple[int, int, Round]]] = {}
    for n, row in enumerate(_rows(files)):
        if row.get("input_tokens_total") is None:
            continue  # a round without token accounting: left out
        key = f"{row.get('project') or ''}/{row['session_id']}".lstrip("/")
        by_key.setdefault(key, []).append((int(row.get("round_index") or 0), n, _round(row)))
    out: list[Session] = []
    for key, rounds in by_key.items():
        out.extend(_sessions(key, [r for _, _, r in sorted(rounds, key=lambda x: x[:2])]))
    return out


def _rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _round(row: dict[str, Any]) -> Round:
    events = row.get("timing_events") or []
    t_in = _latest(e for e in events if e.get("event_type") in INPUT)
    t_out = _latest(e for e in events if e.get("event_type") in OUTPUT)
    tool, tool_s, end = "", 0.0, float("-inf")
    for t in row.get("tools") or []:
        ms = t.get("tool_internal_latency_ms")
        secs = float(ms if ms is not None else t.get("tool_wall_latency_ms") or 0) / 1000
        done = (_ts(t.get("emitted_at")) or 0.0) + secs
        tool_s = max(tool_s, secs)
        if done >= end:
            tool, end = str(t.get("tool_name") or ""), done
    user = any(e.get("event_type") == "user_message" for e in events)
    return Round(int(row["input_tokens_total"]), int(row.get("output_tokens") or 1), t_in, t_out,
                 tool, tool_s, user)  # fmt: skip


def _sessions(key: str, rounds: list[Round]) -> Iterator[Session]:
    part, cur = 1, Builder(key, rounds[0].t_in, rounds[0].total, [rounds[0].output])
    for a, b in zip(rounds, rounds[1:], strict=False):
        if b.total < a.total:  # a compacted or restarted history: a new job
            yield cur.build()
            part += 1
            cur = Builder(f"{key}#{part}", b.t_in, b.total, [b.output])
            continue
        gap = a.tool_s if b.t_in is None or a.t_out is None else round(b.t_in - a.t_out, 6)
        tool = a.tool or (USER if b.user else "")
        cur.add(b.total - a.total - a.output, gap, tool, b.output)
    yield cur.build()


def _latest(events: Iterator[dict[str, Any]]) -> float | None:
    times = [t for t in (_ts(e.get("timestamp")) for e in events) if t is not None]
    return max(times) if times else None


def _ts(value: Any) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
