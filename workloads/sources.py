"""Where a cell's jobs come from, one function per source, and ``build(cfg)``.

``generated`` (``workload.trace`` unset): the seed's agent jobs from the workload config
(``workloads.agent``). ``trace`` (``workload.trace=FILE`` or a folder of shards): recorded
sessions, read by the format ``workload.trace_format`` (null: detected; ``workloads.traces``):

- ``kvbench``: a workload file written from a cell (``workloads.io``), replayed as recorded:
  token ids, tool times, tool names;
- ``lmcache_agentic``, ``tracelab``: real agent sessions, one job each: per request the
  tokens appended, the output tokens, the gap before the next request and its tool, with
  token ids drawn from ``workload.seed`` (only a job's own prefix can hit). A session is cut
  before its first request that would not fit ``model.max_model_len``.

``workload.trace_sessions`` replays that many sessions, picked by the seed (null: all);
``workload.trace_max_gap_s`` caps every gap (null: as recorded). The cell's JPS sets the
arrivals, through ``workload.arrival`` (``workloads.arrivals``; null: ``recorded`` when the
trace records session starts, else ``poisson``):

- ``poisson``: sessions start as a Poisson process at the JPS, from ``workload.seed`` (a file
  written from a cell replays that cell's jobs exactly at its JPS and seed);
- ``recorded``: the trace's own session starts, scaled by ``trace_jps / jps`` so that the rate
  becomes the cell's JPS (``trace_jps``: the rate a kvbench file declares, else (n-1) / span).

The summary of a trace workload records ``source``, ``trace``, ``trace_format``, ``arrival``,
``trace_jps``, ``time_scale`` and ``jps_axis`` (what the JPS means, in words), so a cell says
how its load was made, and what the replay cut or capped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from workloads import agent, arrivals, io, traces
from workloads.errors import WorkloadError
from workloads.job import JobSpec, Workload
from workloads.traces.session import Session

if TYPE_CHECKING:
    from omegaconf import DictConfig

Source = Callable[[Any, float, tuple[int, int], int | None], Workload]
SOURCES: dict[str, Source] = {}
FORMAT_KEY = "workload.trace_format"
T = TypeVar("T")


def register(name: str) -> Callable[[Source], Source]:
    def add(fn: Source) -> Source:
        SOURCES[name] = fn
        return fn

    return add


def source_of(wl: Any) -> str:
    return "trace" if wl.trace else "generated"


def build(cfg: DictConfig) -> Workload:
    """The cell's jobs from its config: ``cfg.workload``, the model's vocabulary
    (``cfg.model.first_token_id``, ``vocab_size``) and context (``max_model_len``), and
    ``cfg.jps``. Raises WorkloadError (one line naming the key) for input that cannot make
    jobs."""
    vocab = (int(cfg.model.first_token_id), int(cfg.model.vocab_size))
    max_len = getattr(cfg.model, "max_model_len", None)
    fn = SOURCES[source_of(cfg.workload)]
    return fn(cfg.workload, float(cfg.jps), vocab, None if max_len is None else int(max_len))


def describe(wl: Any, jps: float | None = None) -> str:
    """The cell's jobs in one line, from the config (the plan's workload line; a trace's
    format is detected from its file when the config leaves it null). ``jps``: the cell's,
    for a workload sized by its arrival window (``workload.duration_s``)."""
    if not wl.trace:
        jobs = f"{wl.n_jobs} jobs"
        if wl.n_jobs is None:  # sized by its arrival window: jobs = jps * duration
            count = agent.job_count(None, wl.duration_s, jps) if jps else "jps x duration"
            at = f" at {jps:g} JPS" if jps else ""
            jobs = f"{count} jobs ({wl.duration_s:g} s arrival window{at})"
        return (f"{jobs} x {wl.n_turns} turns, first prompt {wl.first_prompt_tokens} "
                f"tokens, {wl.completion_tokens} output tokens, tool {_tool_line(wl.tool)}, "
                f"seed {wl.seed}")  # fmt: skip
    fmt = getattr(wl, "trace_format", None)
    try:
        fmt = fmt or traces.open_trace("workload.trace", FORMAT_KEY, wl.trace, None)[0].name
        starts = traces.FORMATS[str(fmt)].starts
    except WorkloadError:
        fmt, starts = "format unknown", True
    kind = str(getattr(wl, "arrival", None) or ("recorded" if starts else "poisson"))
    rate = ("recorded session starts scaled to the cell's JPS" if kind == "recorded"
            else f"{kind} at the cell's JPS")  # fmt: skip
    n = getattr(wl, "trace_sessions", None)
    cap = getattr(wl, "trace_max_gap_s", None)
    capped = "" if cap is None else f", gaps capped at {cap:g} s"
    return f"trace {wl.trace} ({fmt}; {n or 'all'} sessions, seed {wl.seed}; {rate}{capped})"


def _tool_line(tool: Any) -> str:
    cap = getattr(tool, "max_s", None)
    capped = "" if cap is None else f", capped at {cap:g} s"
    if str(tool.dist) in ("empirical", "fitted"):
        return f"{tool.dist} per-tool times from {tool.trace}{capped}"
    return f"{tool.dist} {tool.mean_s:g} s{capped}"


@register("generated")
def generated(wl: Any, jps: float, vocab: tuple[int, int], max_len: int | None = None) -> Workload:
    """The seed's agent jobs (``workloads.agent.generate``): their sizes are the config's."""
    return agent.generate(wl, jps, vocab)


@register("trace")
def trace(wl: Any, jps: float, vocab: tuple[int, int], max_len: int | None = None) -> Workload:
    agent.check_trace(wl)
    key = f"workload.trace={wl.trace}"
    fmt, files = traces.open_trace(key, FORMAT_KEY, wl.trace, getattr(wl, "trace_format", None))
    s_arr, s_tok, s_pick, _ = agent.streams(wl.seed)  # generate() draws arrivals from s_arr
    n = getattr(wl, "trace_sessions", None)
    if fmt.name == traces.kvbench.NAME:
        jobs, declared, starts, info = _recorded_jobs(key, files, vocab, n, s_pick)
    else:
        jobs, starts, info = _session_jobs(key, wl, fmt.name, vocab, max_len, s_tok, s_pick)
        declared = None
    jobs, capped = _cap(jobs, getattr(wl, "trace_max_gap_s", None))
    kind, took = _arrival_kind(wl, fmt.name, starts, jobs, declared)
    new = arrivals.get(kind)(s_arr, jps, len(jobs), took)
    jobs = [replace(j, arrival_s=float(t)) for j, t in zip(jobs, new, strict=True)]
    scale = took.jps / jps if kind == "recorded" and took.jps > 0 else None
    meta = {"source": "trace", "trace": str(wl.trace), "trace_format": fmt.name, "arrival": kind,
            "trace_jps": took.jps, "time_scale": scale,
            "jps_axis": arrivals.describe(kind, jps, scale), "sessions": len(jobs),
            "gaps_capped": capped, **info}  # fmt: skip
    return Workload(jobs=jobs, jps=jps, seed=wl.seed, meta=meta)


def _recorded_jobs(
    key: str, files: list, vocab: tuple[int, int], n: int | None, rng: np.random.Generator
) -> tuple[list[JobSpec], float | None, bool, dict]:
    """A kvbench file's jobs as recorded (ids included), ``n`` of them picked by the seed."""
    rec = _workload_file(key, files)
    _check_ids(key, rec, vocab)
    jobs = _pick(rec.jobs, n, rng)
    declared = rec.meta.get("jps") if len(jobs) == len(rec.jobs) else None
    return jobs, declared, True, {"trace_seed": rec.seed, "sessions_in_trace": len(rec.jobs)}


def _session_jobs(
    key: str, wl: Any, fmt: str, vocab: tuple[int, int], max_len: int | None,
    s_tok: np.random.Generator, s_pick: np.random.Generator,
) -> tuple[list[JobSpec], bool, dict]:  # fmt: skip
    """A trace's sessions cut to the context, ``trace_sessions`` of them picked by the seed,
    in order of their recorded starts (if every one has one), as jobs with ids of their own."""
    _, found = traces.sessions(key, FORMAT_KEY, wl.trace, fmt)
    chosen, info = _fit(key, found, max_len)
    chosen = _pick(chosen, getattr(wl, "trace_sessions", None), s_pick)
    starts = all(s.start_s is not None for s in chosen)
    if starts:
        chosen.sort(key=lambda s: s.start_s or 0.0)
    info["token_counts"] = TOKEN_COUNTS.get(fmt, "recorded")
    return traces.jobs(chosen, s_tok, vocab), starts, info


TOKEN_COUNTS = {traces.lmcache_agentic.NAME: "estimated: ceil(characters / 4) per message"}


def _workload_file(key: str, files: list) -> Workload:
    if len(files) != 1:
        raise WorkloadError(f"{key}: a kvbench workload is one file, not a folder of them")
    try:
        rec = io.load(files[0])
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same refusal
        raise traces.unreadable(key, traces.kvbench.NAME, e) from None
    if not rec.jobs:
        raise WorkloadError(f"{key}: holds no jobs")
    return rec


def _fit(key: str, found: Sequence[Session], max_len: int | None) -> tuple[list[Session], dict]:
    """The sessions cut to the model's context, and what was cut."""
    if not found:
        raise WorkloadError(f"{key}: holds no sessions")
    if max_len is None:
        return list(found), {"sessions_in_trace": len(found)}
    kept, cut, turns = [], 0, 0
    for s in found:
        f = s.fit(max_len)
        if f is not None:
            kept.append(f)
            cut += f.n_turns < s.n_turns
            turns += s.n_turns - f.n_turns
    if not kept:
        least = min(s.first_tokens + s.outputs[0] for s in found)
        raise WorkloadError(
            f"{key}: no session fits model.max_model_len={max_len} (the shortest first "
            f"request needs {least} tokens)"
        )
    return kept, {"sessions_in_trace": len(found), "sessions_too_long": len(found) - len(kept),
                  "sessions_cut": cut, "turns_cut": turns, "max_model_len": max_len}  # fmt: skip


def _pick(items: Sequence[T], n: int | None, rng: np.random.Generator) -> list[T]:
    """``n`` of ``items`` drawn by the seed, in their order (all when n is null or more)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.sort(rng.choice(len(items), size=n, replace=False))]


def _cap(jobs: list[JobSpec], cap: float | None) -> tuple[list[JobSpec], int]:
    if cap is None:
        return jobs, 0
    capped = sum(g > cap for j in jobs for g in j.tool_s)
    return [replace(j, tool_s=tuple(min(g, cap) for g in j.tool_s)) for j in jobs], capped


def _arrival_kind(
    wl: Any, fmt: str, starts: bool, jobs: list[JobSpec], declared: float | None
) -> tuple[str, arrivals.Recorded]:
    """The arrival process (null: recorded where the trace has session starts) and the
    trace's recorded starts."""
    kind = str(getattr(wl, "arrival", None) or ("recorded" if starts else "poisson"))
    if kind == "recorded" and not starts:
        raise WorkloadError(
            f"workload.arrival=recorded: this {fmt} trace records no session start "
            "times; allowed for it: poisson"
        )
    times = np.array([j.arrival_s for j in jobs], dtype=np.float64)
    return kind, arrivals.Recorded(times, arrivals.recorded_rate(times, declared))


def _check_ids(key: str, w: Workload, vocab: tuple[int, int]) -> None:
    hi = vocab[1]
    for j in w.jobs:
        for ids in (j.first_prompt, *j.tool_outputs):
            if ids and (max(ids) >= hi or min(ids) < 0):
                bad = max(ids) if max(ids) >= hi else min(ids)
                raise WorkloadError(
                    f"{key}: job {j.job_id} has token id {bad} "
                    f"outside the model's vocabulary [0, {hi}) (model.vocab_size); replay it "
                    "with the model it was written for"
                )
        if min((j.completion_tokens, *j.completions)) < 1:
            raise WorkloadError(
                f"{key}: job {j.job_id} asks for {j.completion_tokens} completion tokens"
            )
        if any(not t >= 0 for t in j.tool_s):
            raise WorkloadError(f"{key}: job {j.job_id} has a negative or NaN tool time")
