"""Recorded agent traces: a registry of file formats, each a small reader from its files to
``Session``s (``workloads.traces.session``), chosen by ``workload.trace_format`` (or
``workload.tool.trace_format``) or, when that is null, detected from the file.

A trace is a file, or a folder of files of one format (the shards of a parquet dataset), read
in name order. Register another format with ``register(Format(...))`` (and add it to
``launch.schema.TraceFormat``). Reading is cached per file and modification time, so a sweep
that plans many cells of one trace reads it once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.paths import resolve
from workloads.traces import kvbench, lmcache_agentic, tracelab
from workloads.traces.session import USER, Session, jobs

__all__ = ["FORMATS", "USER", "Format", "Session", "jobs", "open_trace", "sessions", "summarize"]

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    starts: bool  # records when its sessions started (so workload.arrival=recorded can be)
    matches: Callable[[Path], bool]  # the file looks like this format (its schema, first row)
    read: Callable[[list[Path]], list[Session]]


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


register(Format(kvbench.NAME, (".parquet", ".jsonl"), True, kvbench.matches, kvbench.read))
register(Format(lmcache_agentic.NAME, (".parquet",), False, lmcache_agentic.matches,
                lmcache_agentic.read))  # fmt: skip
register(Format(tracelab.NAME, (".jsonl", ".jsonl.gz"), True, tracelab.matches, tracelab.read))


def suffix(path: Path) -> str:
    return next((s for s in SUFFIXES if path.name.endswith(s)), "")


def open_trace(key: str, fkey: str, value: str, fmt: str | None) -> tuple[Format, list[Path]]:
    """The format and files of the trace ``value`` (the config's ``key``; its format from
    ``fkey``, null: detected). Raises WorkloadError in one line naming the key."""
    files = _files(key, value)
    if fmt is not None and str(fmt) not in FORMATS:
        raise WorkloadError(f"{fkey}={fmt} is unknown; allowed: {', '.join(FORMATS)}")
    candidates = [FORMATS[str(fmt)]] if fmt is not None else list(FORMATS.values())
    for f in candidates:
        if suffix(files[0]) in f.suffixes and _matches(key, f, files[0], fmt is None):
            return f, files
    if fmt is not None:
        raise WorkloadError(
            f"{key}: not a {fmt} trace ({files[0].name}); set {fkey}=null to detect the format, "
            f"or one of: {', '.join(FORMATS)}"
        )
    raise WorkloadError(f"{key}: not a trace of a known format ({fkey} allowed: "
                        f"{', '.join(FORMATS)})")  # fmt: skip


def sessions(
    key: str, fkey: str, value: str, fmt: str | None
) -> tuple[Format, tuple[Session, ...]]:
    """The trace's sessions, read once per file version."""
    f, files = open_trace(key, fkey, value, fmt)
    stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    try:
        return f, _read(f.name, stamps)
    except WorkloadError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable trace is the same refusal
        raise unreadable(key, f.name, e) from None


def unreadable(key: str, fmt: str, e: BaseException) -> WorkloadError:
    why = (str(e).strip().splitlines() or [""])[0]
    return WorkloadError(f"{key}: cannot read it as a workload ({fmt}: {type(e).__name__}: {why})")


def tool_samples(found: tuple[Session, ...]) -> dict[str, list[float]]:
    """Per tool, the gaps a trace recorded after calling it (gaps without a tool, and those
    that waited for a person, are left out), tools in order of first call."""
    out: dict[str, list[float]] = {}
    for s in found:
        for name, gap in zip(s.tools, s.gaps, strict=True):
            if name and name != USER:
                out.setdefault(name, []).append(gap)
    return out


@functools.lru_cache(maxsize=4)
def _read(fmt: str, stamps: tuple[tuple[str, int, int], ...]) -> tuple[Session, ...]:
    return tuple(FORMATS[fmt].read([Path(p) for p, _, _ in stamps]))


def _files(key: str, value: str) -> list[Path]:
    path = resolve(value)
    allowed = ", ".join(SUFFIXES)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if suffix(p) and p.is_file())
        if not files:
            raise WorkloadError(f"{key}: the folder {path} holds no trace files ({allowed})")
        return files
    if not suffix(path):
        raise WorkloadError(f"{key}: not a workload file; allowed suffixes: {allowed} "
                            "(or a folder of them)")  # fmt: skip
    if not path.is_file():
        raise WorkloadError(
            f"{key}: no such file ({path}); write one with python -m launch workload --out FILE"
        )
    return [path]


def _matches(key: str, f: Format, path: Path, detecting: bool) -> bool:
    try:
        return f.matches(path)
    except Exception as e:  # noqa: BLE001 - a file that cannot even be opened
        raise unreadable(key, "detecting its format" if detecting else f.name, e) from None


def summarize(found: tuple[Session, ...]) -> dict:
    """What a trace holds: sessions, requests, prompt sizes, and per tool its gaps (calls,
    share of calls, median, p90, max, and the share of its time in its slowest 10% of calls)."""
    last = [s.prompt_tokens(s.n_turns) for s in found]
    tools: dict[str, dict] = {}
    samples = tool_samples(found)
    calls = sum(len(x) for x in samples.values())
    for name, gaps in sorted(samples.items(), key=lambda kv: -len(kv[1])):
        x = np.sort(np.asarray(gaps))
        slow = x[int(np.floor(0.9 * len(x))) :]
        tools[name] = {"calls": len(x), "share": round(len(x) / calls, 4),
                       "median_s": round(float(np.median(x)), 4),
                       "p90_s": round(float(np.quantile(x, 0.9)), 4),
                       "max_s": round(float(x[-1]), 4),
                       "slowest_10pct_time_share": round(float(slow.sum() / max(x.sum(), 1e-12)),
                                                         4)}  # fmt: skip
    return {"sessions": len(found), "requests": sum(s.n_turns for s in found),
            "user_waits": sum(t == USER for s in found for t in s.tools),
            "first_prompt_tokens_median": float(np.median([s.first_tokens for s in found])),
            "last_prompt_tokens_median": float(np.median(last)) if last else 0.0,
            "last_prompt_tokens_max": max(last, default=0), "tools": tools}  # fmt: skip
