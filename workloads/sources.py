"""Where a cell's jobs come from, one function per source, and ``build(cfg)``.

``generated`` (``workload.trace`` unset): the seed's agent jobs from the workload config
(``workloads.agent``). ``trace`` (``workload.trace=FILE``): the jobs of a workload file
(``workloads.io``) as recorded: token ids, tool outputs, tool times. Either way the cell's JPS
sets the arrivals, through the arrival process ``workload.arrival`` (``workloads.arrivals``;
null: ``poisson`` for generated jobs, ``recorded`` for a trace):

- ``poisson``: a Poisson process at the JPS from ``workload.seed`` (for a trace too: a file
  written from a cell replays that cell's jobs exactly at its JPS and seed);
- ``recorded``: the trace's own arrival times, scaled by ``trace_jps / jps`` so that the rate
  becomes the cell's JPS (``trace_jps``: the rate the file declares, else (n-1) / span).

The summary of a trace workload records ``source``, ``trace``, ``arrival``, ``trace_jps`` and
``time_scale``, so a cell says how its load was made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from workloads import agent, arrivals, io
from workloads.errors import WorkloadError
from workloads.paths import resolve

if TYPE_CHECKING:
    from omegaconf import DictConfig

Source = Callable[[Any, float, tuple[int, int]], agent.Workload]
SOURCES: dict[str, Source] = {}


def register(name: str) -> Callable[[Source], Source]:
    def add(fn: Source) -> Source:
        SOURCES[name] = fn
        return fn

    return add


def source_of(wl: Any) -> str:
    return "trace" if wl.trace else "generated"


def build(cfg: DictConfig) -> agent.Workload:
    """The cell's jobs from its config: ``cfg.workload``, the model's vocabulary
    (``cfg.model.first_token_id``, ``vocab_size``) and ``cfg.jps``. Raises WorkloadError
    (one line naming the key) for input that cannot make jobs."""
    vocab = (int(cfg.model.first_token_id), int(cfg.model.vocab_size))
    return SOURCES[source_of(cfg.workload)](cfg.workload, float(cfg.jps), vocab)


register("generated")(agent.generate)


@register("trace")
def trace(wl: Any, jps: float, vocab: tuple[int, int]) -> agent.Workload:
    key = f"workload.trace={wl.trace}"
    path = resolve(wl.trace)
    if path.suffix not in io.SUFFIXES:
        allowed = ", ".join(io.SUFFIXES)
        raise WorkloadError(f"{key}: not a workload file; allowed suffixes: {allowed}")
    if not path.is_file():
        raise WorkloadError(
            f"{key}: no such file ({path}); write one with python -m launch workload --out FILE"
        )
    try:
        rec = io.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same refusal
        why = (str(e).strip().splitlines() or [""])[0]
        raise WorkloadError(
            f"{key}: cannot read it as a workload ({type(e).__name__}: {why})"
        ) from None
    if not rec.jobs:
        raise WorkloadError(f"{key}: holds no jobs")
    _check_ids(key, rec, vocab)
    kind = str(getattr(wl, "arrival", None) or "recorded")
    times = np.array([j.arrival_s for j in rec.jobs], dtype=np.float64)
    declared = rec.meta.get("jps")
    took = arrivals.Recorded(times, arrivals.recorded_rate(times, declared))
    s_arr = agent.streams(wl.seed)[0]  # the stream generate() draws arrivals from
    new = arrivals.get(kind)(s_arr, jps, len(times), took)
    jobs = [replace(j, arrival_s=float(t)) for j, t in zip(rec.jobs, new, strict=True)]
    meta = {
        "source": "trace",
        "trace": str(wl.trace),
        "arrival": kind,
        "trace_jps": took.jps,
        "time_scale": took.jps / jps if kind == "recorded" and took.jps > 0 else None,
        "trace_seed": rec.seed,
    }
    return agent.Workload(jobs=jobs, jps=jps, seed=wl.seed, meta=meta)


def _check_ids(key: str, w: agent.Workload, vocab: tuple[int, int]) -> None:
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
        if j.completion_tokens < 1:
            raise WorkloadError(
                f"{key}: job {j.job_id} asks for {j.completion_tokens} completion tokens"
            )
        if any(not t >= 0 for t in j.tool_s):
            raise WorkloadError(f"{key}: job {j.job_id} has a negative or NaN tool time")
