"""The seed's agent job as data: deterministic from a config and a seed.

A job (``workloads.job.JobSpec``) has ``n_turns`` turns. Turn 1 sends the first prompt; after
turn k the tool runs for ``tool_s[k]`` seconds and returns ``tool_tokens[k]`` tokens, which are
appended (after the model's own output) to form the prompt of turn k+1. Token ids are drawn
uniformly from the model's vocabulary, so no two jobs share a prefix and the prefix cache can
only help inside a job. Everything is drawn from ``numpy.random.Generator(PCG64(seed))``
streams that do not depend on the policy or the engine, so one seed gives the same jobs
everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from workloads import arrivals, tooltime
from workloads.errors import WorkloadError
from workloads.job import JobSpec, Workload

__all__ = ["JobSpec", "Workload", "check", "check_trace", "generate", "job_count", "streams"]


def job_count(n_jobs: int | None, duration_s: float | None, jps: float) -> int:
    if n_jobs is not None:
        if not n_jobs > 0:
            raise WorkloadError(f"workload.n_jobs={n_jobs}: must be a positive number of jobs")
        return int(n_jobs)
    if duration_s is None or not duration_s > 0:
        raise WorkloadError(
            f"workload.duration_s={duration_s}: set workload.n_jobs, or workload.duration_s > 0 "
            "(jobs = jps * duration)"
        )
    return max(1, round(jps * duration_s))


def _positive_int(key: str, v: Any, what: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise WorkloadError(f"workload.{key}={v}: must be a positive number of {what}")


def check(wl: Any) -> None:
    """Refuse a workload config that cannot make jobs (WorkloadError, one line naming the key).
    The same rules serve planning (``launch.schema.WorkloadConf``) and ``generate``."""
    if wl.n_jobs is not None:
        job_count(wl.n_jobs, None, 1.0)
    elif wl.duration_s is None or not (wl.duration_s > 0 and math.isfinite(wl.duration_s)):
        shown = "null" if wl.duration_s is None else wl.duration_s
        raise WorkloadError(
            f"workload.duration_s={shown}: with workload.n_jobs=null it must be a "
            "positive number of seconds (jobs = jps * duration)"
        )
    _positive_int("n_turns", wl.n_turns, "turns")
    _positive_int("first_prompt_tokens", wl.first_prompt_tokens, "tokens")
    _positive_int("completion_tokens", wl.completion_tokens, "tokens")
    sizes = list(wl.tool_output_tokens)
    if not sizes and wl.n_turns > 1:
        raise WorkloadError(
            "workload.tool_output_tokens=[]: must list at least one tool-output size (tokens) "
            f"for the {wl.n_turns - 1} tool calls of a job"
        )
    bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        shown = "[" + ",".join(map(str, sizes)) + "]"
        raise WorkloadError(
            f"workload.tool_output_tokens={shown}: sizes must be positive numbers of tokens "
            f"(got {bad[0]})"
        )
    check_trace(wl)
    kind = getattr(wl, "arrival", None)
    if kind is not None:
        arrivals.get(kind)
    tooltime.make(wl.tool)


def check_trace(wl: Any) -> None:
    """The rules of the keys a trace replay reads: the seed, ``trace_sessions`` (null or a
    positive count), ``trace_max_gap_s`` (null or a non-negative time)."""
    if isinstance(wl.seed, bool) or not isinstance(wl.seed, int) or wl.seed < 0:
        raise WorkloadError(f"workload.seed={wl.seed}: must be a non-negative integer")
    n = getattr(wl, "trace_sessions", None)
    if n is not None:
        _positive_int("trace_sessions", n, "sessions (or null: all)")
    cap = getattr(wl, "trace_max_gap_s", None)
    if cap is not None and (
        isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 <= cap < math.inf
    ):
        raise WorkloadError(
            f"workload.trace_max_gap_s={cap}: must be a non-negative number of seconds "
            "(or null: gaps as recorded)"
        )


def streams(seed: int) -> list[np.random.Generator]:
    """The seed's four independent streams: arrivals, token ids, size orders, tool times."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def generate(wl: Any, jps: float, vocab: tuple[int, int]) -> Workload:
    """Build the cell's jobs from a WorkloadConf-like object (attributes as in the schema)."""
    check(wl)
    lo, hi = vocab
    if not 0 <= lo < hi:
        raise WorkloadError(
            f"model.vocab_size={hi}: must exceed model.first_token_id={lo} (token ids are drawn "
            "from [first_token_id, vocab_size))"
        )
    kind = str(getattr(wl, "arrival", None) or "poisson")
    n = job_count(wl.n_jobs, wl.duration_s, jps)
    s_arr, s_tok, s_size, s_tool = streams(wl.seed)
    times = arrivals.get(kind)(s_arr, jps, n)
    tools = tooltime.make(wl.tool)
    sizes = list(wl.tool_output_tokens)
    gaps = wl.n_turns - 1
    jobs = []
    for i in range(n):
        order = s_size.permutation(np.resize(np.asarray(sizes), max(gaps, len(sizes))))[:gaps]
        first = tuple(s_tok.integers(lo, hi, wl.first_prompt_tokens).tolist())
        outs = tuple(tuple(s_tok.integers(lo, hi, int(k)).tolist()) for k in order)
        secs, names = tools.draw_tools(s_tool, gaps)
        jobs.append(
            JobSpec(
                job_id=i,
                arrival_s=float(times[i]),
                first_prompt=first,
                tool_outputs=outs,
                tool_s=tuple(secs),
                completion_tokens=wl.completion_tokens,
                tool_names=tuple(names) if any(names) else (),
            )
        )
    meta = {"source": "generated", "arrival": kind, "jps_axis": arrivals.describe(kind, jps)}
    meta.update(tools.describe())
    return Workload(jobs=jobs, jps=jps, seed=wl.seed, meta=meta)
