"""Write the two sample traces of this folder (``python -m workloads.samples.make_samples``).

They are written by us, not taken from the datasets: the same fields as the LMCache agentic
traces (Hugging Face ``sammshen/lmcache-agentic-traces``) and TraceLab (``uw-syfi/TraceLab``)
rows, with made-up but realistic sizes and times (heavy-tailed per tool: a file read takes
0.05-0.3 s, a web search 1-5 s, a test run seconds to a minute). The tables below are the
samples' content; the text of every message is filler of the stated length. Tests read the
samples and check what the readers make of them (tests/workloads/test_traces.py).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
LMCACHE = HERE / "lmcache_agentic_sample.parquet"
TRACELAB = HERE / "tracelab_sample.jsonl"

# --- LMCache agentic: per session, the system and user prompts (characters) and its steps:
# (reply characters, tool called (None: a reply to the user), its arguments' characters,
#  what came back (characters: the tool's result, or the user's next message), the call's
#  output_length, the next call's pre_gap (s)). A last call without a tool ends the session.
Step = tuple[int, str | None, int, int | None, int, float | None]
LMCACHE_SESSIONS: list[tuple[str, str, int, int, list[Step]]] = [
    ("swebench__sample-org__widget-1234__minimax", "minimax-m2.5", 7200, 2400, [
        (48, "str_replace_editor", 96, 6800, 96, 0.21),
        (36, "execute_bash", 64, 1900, 74, 0.64),
        (52, "execute_bash", 58, 5200, 88, 18.7),
        (40, "str_replace_editor", 1480, 1100, 412, 0.12),
        (30, "execute_bash", 58, 3300, 81, 41.3),
        (120, "finish", 220, None, 150, None),
    ]),
    ("gaia__sample-task-0007__claude", "claude-sonnet-4.5", 3600, 900, [
        (44, "web_search", 72, 4400, 64, 2.84),
        (38, "fetch_url", 110, 12000, 58, 1.37),
        (50, "web_search", 80, 3900, 71, 4.62),
        (60, "python_exec", 760, 620, 236, 0.92),
        (640, None, 0, None, 180, None),
    ]),
    ("wildclaw__sample-chat-03__gemini", "gemini-2.5-pro", 2800, 1200, [
        (34, "read_file", 48, 8400, 55, 0.083),
        (42, "run_shell", 40, 2700, 90, 12.9),
        (1150, None, 0, 340, 320, 21.4),
        (30, "read_file", 52, 5100, 48, 0.19),
        (900, None, 0, None, 260, None),
    ]),
]  # fmt: skip

# --- TraceLab: per session, its key, model, start, and rounds:
# (tokens appended before it (the first: its whole prompt), output tokens, generation time
#  (s), its tools [(name, latency ms, runner-reported ms or None)], then the wait (s) for
#  the user's next message when it called no tool (None: the session ends)).
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
Round = tuple[int, int, float, list[tuple[str, int, int | None]], float | None]
TRACELAB_SESSIONS: list[tuple[str, str, str, str, datetime, list[Round]]] = [
    ("claude", "project_sample_a", "claude:sample-0001", "claude-sonnet-4-5", T0, [
        (16240, 180, 3.1, [("Read", 142, None)], None),
        (1420, 96, 1.9, [("Grep", 388, None)], None),
        (610, 122, 2.2, [("Bash", 14730, None)], None),
        (2050, 540, 8.4, [("Edit", 95, None)], None),
        (45, 88, 1.7, [("Bash", 41920, None)], None),
        (1130, 310, 5.6, [], 48.2),
        (38, 120, 2.4, [("Read", 210, None)], None),
        (980, 260, 4.8, [], None),
    ]),
    ("claude", "project_sample_b", "claude:sample-0002", "claude-sonnet-4-5",
     T0 + timedelta(minutes=4, seconds=10), [
        (15880, 140, 2.5, [("WebSearch", 2840, 2836)], None),
        (1240, 90, 1.8, [("WebFetch", 1910, 1906)], None),
        (2600, 110, 2.0, [("WebSearch", 4620, 4617), ("Read", 180, None)], None),
        (1980, 70, 1.4, [("WebSearch", 1370, 1366)], None),
        (1050, 620, 9.9, [], None),
    ]),
    ("codex", "project_sample_c", "codex:sample-0003", "gpt-5-codex",
     T0 + timedelta(minutes=11, seconds=30), [
        (9800, 210, 4.2, [("shell", 310, 298)], None),
        (760, 150, 3.0, [("shell", 27400, 27391)], None),
        (1900, 480, 7.5, [("apply_patch", 120, None)], None),
        (60, 95, 1.6, [("shell", 3180, 3172)], None),
        (720, 90, 1.5, [("shell", 58600, 58588)], None),
        (1400, 300, 5.1, [], None),
    ]),
]  # fmt: skip
PARALLEL_LEAD_S = 0.35  # a round's earlier tool calls are emitted this long before its last


def filler(n: int, what: str) -> str:
    text = f"[{what}] " + " ".join(f"sample line {i} of made-up {what} text." for i in range(n))
    return text[:n]


# --- LMCache -----------------------------------------------------------------------------


def lmcache_rows() -> list[dict]:
    rows = []
    for sid, model, sys_chars, user_chars, steps in LMCACHE_SESSIONS:
        msgs = [_msg("system", filler(sys_chars, "system prompt")),
                _msg("user", filler(user_chars, "task"))]  # fmt: skip
        gap = 0.0
        for k, (reply, tool, args, back, out, next_gap) in enumerate(steps):
            rows.append({"session_id": sid, "model": model, "input": list(msgs),
                         "output_length": out, "pre_gap": gap})  # fmt: skip
            call_id = f"call_{sid[-8:]}_{k}"
            fn = {"name": tool, "arguments": filler(args, "arguments")}
            calls = [{"id": call_id, "type": "function", "function": fn}]
            msgs.append(_msg("assistant", filler(reply, "reply"), calls if tool else None))
            if back is not None:
                msgs.append(_msg("tool", filler(back, f"{tool} result"), None, call_id, tool)
                            if tool else _msg("user", filler(back, "follow-up")))  # fmt: skip
            gap = next_gap or 0.0
    return rows


def _msg(role: str, content: str, calls: list | None = None, call_id: str | None = None,
         name: str | None = None) -> dict:  # fmt: skip
    return {"role": role, "content": content, "tool_calls": calls, "tool_call_id": call_id,
            "name": name}  # fmt: skip


LMCACHE_SCHEMA = pa.schema([
    ("session_id", pa.string()),
    ("model", pa.string()),
    ("input", pa.list_(pa.struct([
        ("role", pa.string()), ("content", pa.string()),
        ("tool_calls", pa.list_(pa.struct([
            ("id", pa.string()), ("type", pa.string()),
            ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
        ]))),
        ("tool_call_id", pa.string()), ("name", pa.string()),
    ]))),
    ("output_length", pa.int64()),
    ("pre_gap", pa.float64()),
])  # fmt: skip


# --- TraceLab ----------------------------------------------------------------------------


def tracelab_rows() -> list[dict]:
    rows = []
    for provider, project, sid, model, start, rounds in TRACELAB_SESSIONS:
        back: tuple[str, int, list[dict]] = ("user_message", 146, [])
        t_in, total, last = start, 0, 0
        for k, (appended, out, gen_s, tools, wait_s) in enumerate(rounds):
            total += appended
            # cached: the previous prompt; the first, Claude's system prompt from other sessions
            prefix = last if k else (min(total, 14000) if provider == "claude" else 0)
            events = _inputs(t_in, back)
            t_out = t_in + timedelta(seconds=gen_s)
            text_s = gen_s * 0.7 if tools else gen_s  # a reply without tools ends on its text
            events += [_event("reasoning", t_in + timedelta(seconds=gen_s * 0.4)),
                       _event("text", t_in + timedelta(seconds=text_s))]  # fmt: skip
            made = [_tool(sid, k, i, t, t_out - timedelta(seconds=PARALLEL_LEAD_S * (len(tools)
                    - 1 - i)), provider) for i, t in enumerate(tools)]  # fmt: skip
            events += [_event("tool_call", _at(m["emitted_at"]), tool_call_id=m["tool_call_id"],
                              tool_name=m["tool_name"], tool_index=m["tool_index"])
                       for m in made]  # fmt: skip
            rows.append(_row(provider, project, sid, model, k, total, prefix, out, events, made,
                             back))  # fmt: skip
            last = total
            total += out
            if made:
                t_in = max(_at(m["result_at"]) for m in made)
                back = ("tool_result", 0, made)
            else:
                t_in = t_out + timedelta(seconds=wait_s or 0.0)
                back = ("user_message", 38, [])
    return rows


def _inputs(t: datetime, back: tuple) -> list[dict]:
    kind, chars, made = back
    if kind == "user_message":
        return [_event("user_message", t, content_chars=chars)]
    return [_event("tool_result", _at(m["result_at"]), tool_call_id=m["tool_call_id"],
                   result_chars=m["result_chars"], is_error=False) for m in made]  # fmt: skip


def _tool(sid: str, k: int, i: int, tool: tuple, emitted: datetime, provider: str) -> dict:
    name, wall_ms, internal_ms = tool
    return {"tool_index": i, "tool_name": name, "tool_call_id": f"toolu_{sid[-4:]}_{k}_{i}",
            "emitted_at": _iso(emitted), "input_chars": 60 + 40 * i,
            "result_chars": 400 + 9 * (wall_ms % 997), "tool_wall_latency_ms": wall_ms,
            "tool_internal_latency_ms": internal_ms, "is_error": False,
            "result_at": _iso(emitted + timedelta(milliseconds=wall_ms))}  # fmt: skip


def _row(provider: str, project: str, sid: str, model: str, k: int, total: int, prefix: int,
         out: int, events: list, made: list, back: tuple) -> dict:  # fmt: skip
    claude = provider == "claude"
    new = total - prefix
    kind, chars, _ = back
    results = sum(m["result_chars"] for m in back[2])
    return {
        "provider": provider, "project": project, "session_id": sid, "round_index": k,
        "round_id": f"msg_{sid[-4:]}_{k:03d}", "model": model,
        "input_tokens_total": total, "prefix_tokens": prefix, "newly_append_tokens": new,
        "claude_uncached_input_tokens": 2 if claude else None,
        "claude_cache_creation_input_tokens": new - 2 if claude else None,
        "claude_cache_read_input_tokens": prefix if claude else None,
        "output_tokens": out, "reasoning_output_tokens": None if claude else out // 3,
        "timing_events": events, "tools": made,
        "current_input_event_count": max(1, len(back[2])),
        "current_user_message_count": int(kind == "user_message"),
        "current_tool_result_count": len(back[2]),
        "current_user_message_chars": chars if kind == "user_message" else 0,
        "current_tool_result_chars": results,
        "current_input_chars": results + (chars if kind == "user_message" else 0),
        "first_input_event_type": kind, "store": f".{provider}",
        "trace_key": f"{provider}:{sid}:msg_{sid[-4:]}_{k:03d}",
    }  # fmt: skip


def _event(kind: str, t: datetime, **extra: object) -> dict:
    source = {"user_message": "user.message", "tool_result": "user.content.tool_result",
              "reasoning": "assistant.content.thinking", "text": "assistant.content.text",
              "tool_call": "assistant.content.tool_use"}[kind]  # fmt: skip
    return {"event_type": kind, "timestamp": _iso(t), "source": source, **extra}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def write() -> None:
    table = pa.Table.from_pylist(lmcache_rows(), schema=LMCACHE_SCHEMA)
    tmp = LMCACHE.with_name(f".{LMCACHE.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, LMCACHE)
    tmp = TRACELAB.with_name(f".{TRACELAB.name}.tmp")
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in tracelab_rows()))
    os.replace(tmp, TRACELAB)


if __name__ == "__main__":
    write()
    print(f"wrote {LMCACHE} and {TRACELAB}")
