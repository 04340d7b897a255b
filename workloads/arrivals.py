"""Arrival processes, one function per kind, chosen by ``workload.arrival``.

Each takes the arrival stream of the seed, the cell's JPS, the number of jobs and (for a
trace) the recorded arrivals, and returns the jobs' arrival times in seconds, the first at 0.
Register another kind with ``@register("name")`` (and add it to ``launch.schema.Arrival``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workloads.errors import WorkloadError


@dataclass(frozen=True)
class Recorded:
    """A trace's own arrival times (sorted) and the rate they were recorded at (jobs/s)."""

    times: np.ndarray
    jps: float


class ArrivalProcess(Protocol):
    def __call__(
        self, rng: np.random.Generator, jps: float, n: int, trace: Recorded | None = None
    ) -> np.ndarray: ...


ARRIVALS: dict[str, ArrivalProcess] = {}


def register(name: str) -> Callable[[ArrivalProcess], ArrivalProcess]:
    def add(fn: ArrivalProcess) -> ArrivalProcess:
        ARRIVALS[name] = fn
        return fn

    return add


def get(kind: str) -> ArrivalProcess:
    try:
        return ARRIVALS[str(kind)]
    except KeyError:
        raise WorkloadError(
            f"workload.arrival={kind} is unknown; allowed: {', '.join(ARRIVALS)}"
        ) from None


def _check_rate(jps: float) -> float:
    try:
        j = float(jps)
    except (TypeError, ValueError):
        j = math.nan
    if not (j > 0 and math.isfinite(j)):
        raise WorkloadError(f"jps={jps!r}: must be a positive number of jobs per second")
    return j


@register("poisson")
def poisson(
    rng: np.random.Generator, jps: float, n: int, trace: Recorded | None = None
) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of rate ``jps``; the first at 0."""
    gaps = rng.exponential(1.0 / _check_rate(jps), size=n)
    if n:
        gaps[0] = 0.0
    return np.cumsum(gaps)


@register("recorded")
def recorded(
    rng: np.random.Generator, jps: float, n: int, trace: Recorded | None = None
) -> np.ndarray:
    """A trace's own arrival times, from 0, scaled so that its rate becomes ``jps``: the
    recorded gaps (bursts, lulls) keep their shape, the load is the cell's."""
    j = _check_rate(jps)
    if trace is None:
        raise WorkloadError(
            "workload.arrival=recorded: only a trace has recorded arrivals (set "
            "workload.trace=FILE); allowed for generated jobs: poisson"
        )
    t = np.asarray(trace.times, dtype=np.float64)
    if len(t) != n:
        raise WorkloadError(f"workload.arrival=recorded: {len(t)} recorded arrivals for {n} jobs")
    if n == 0:
        return t
    t = t - t[0]
    return t * (trace.jps / j) if trace.jps > 0 else t


def recorded_rate(times: np.ndarray, declared: float | None = None) -> float:
    """The rate a trace was recorded at: the one its file declares, else (n-1) / span; 0 when
    it cannot tell (one job, or all at once)."""
    if declared is not None and declared > 0 and math.isfinite(declared):
        return float(declared)
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


def describe(kind: str, jps: float, time_scale: float | None = None) -> str:
    """What the cell's JPS means for these arrivals, in one line (the summary's ``jps_axis``)."""
    if kind == "poisson":
        return f"jobs start as a Poisson process at {jps:g} jobs/s, drawn from the seed"
    if kind == "recorded":
        scale = "unscaled (the trace's rate is unknown)"
        if time_scale is not None:
            scale = f"recorded gaps times {time_scale:.4g}"
        return f"jobs start at the trace's recorded times, {scale}, so the rate is {jps:g} jobs/s"
    return f"{kind} arrivals at {jps:g} jobs/s"
