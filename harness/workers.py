"""How many client processes a cell runs (:mod:`harness.shards`), decided in this one place.

A cell's expected request rate is its JPS times the turns per job (every turn is one streamed
request). One client process carries at most :data:`WORKER_RPS` requests/s with its arrivals
on time; a cell that expects more needs more processes, and ``workload.client_workers``
(an int, or ``auto``) says how many it gets. ``auto`` takes the cores the cell has (SLURM's
allocation, else this process' CPU affinity), leaves the server what it needs, and takes no
more than the rate needs: the smoke cells (8 requests/s) run one, in the cell's own process.

Standard library only: planning imports it for its warning (``launch.plan``) without loading
the client.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
# Requests/s one client process is given, seed-sized prompts (1,600 to ~13K ids). Chosen when
# a request cost ~11 ms of CPU (80 requests/s kept a core ~87% busy, lag p99 44-61 ms). Since
# issue 15's client (AioTransport.send) a request costs ~2.8 ms and one process carried 120
# requests/s with its own lag p99 at 2.9 ms on a third of its core (bench/README.md,
# client_peers.py): 40 is conservative. Kept so that the worker counts of running campaigns
# (the H200 cells at JPS 10: 2 workers) stay as they were.
WORKER_RPS = 40.0
# Cores the server keeps on a GPU cell: its API server (HTTP, SSE) and its engine core's loop.
GPU_SERVER_CORES = 2
# SLURM's count of the cell's cores, in the order trusted (the first set wins).
SLURM_VARS = ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE")


def request_rate(jps: float, turns_per_job: float) -> float:
    """Requests/s a cell sends on average: jobs/s x requests (turns) per job."""
    return float(jps) * float(turns_per_job)


def needed(rate_rps: float) -> int:
    """Client processes that carry ``rate_rps`` on time."""
    return max(1, math.ceil(rate_rps / WORKER_RPS - 1e-9))


@dataclass(frozen=True)
class Cores:
    n: int
    source: str  # where the count came from: a SLURM variable, "affinity", a config key


def cell_cores(environ: Mapping[str, str] | None = None, affinity: int | None = None) -> Cores:
    """The cores this cell may use: SLURM's allocation when it runs under SLURM (no more than
    the CPU affinity allows), else this process' CPU affinity."""
    env = os.environ if environ is None else environ
    have = _affinity() if affinity is None else affinity
    for var in SLURM_VARS:
        n = _slurm_count(env.get(var))
        if n:
            return Cores(min(n, have), var)
    return Cores(have, "CPU affinity")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slurm_count(value: str | None) -> int | None:
    """``8``, or the first node's count of ``SLURM_JOB_CPUS_PER_NODE`` (``8(x2),4``)."""
    m = re.match(r"\s*(\d+)", value or "")
    return int(m.group(1)) if m else None


def server_cores(device: str, cores: int) -> int:
    """Cores the server keeps for itself: on a GPU, :data:`GPU_SERVER_CORES`; the CPU engine
    computes on the cores themselves, so it keeps half of them (at least one)."""
    return max(1, cores // 2) if device == "cpu" else GPU_SERVER_CORES


def cores_for(workers: int, device: str) -> int:
    """The fewest cores on which ``auto`` gives ``workers`` client processes."""
    n = workers + 1
    while n - server_cores(device, n) < workers:
        n += 1
    return n


@dataclass(frozen=True)
class WorkerChoice:
    workers: int
    rate_rps: float
    basis: str  # how the number was chosen, one line (logged, and in the manifest)

    @property
    def needed(self) -> int:
        return needed(self.rate_rps)

    @property
    def capacity_rps(self) -> float:
        return self.workers * WORKER_RPS

    @property
    def short(self) -> bool:
        """The cell expects more requests/s than its workers carry on time."""
        return self.rate_rps > self.capacity_rps


def choose(setting: int | str, rate_rps: float, device: str, cores: Cores) -> WorkerChoice:
    """The client processes of a cell: ``setting`` (``workload.client_workers``) when it is a
    number, else (``auto``) the cores left after the server, no more than the rate needs."""
    need = needed(rate_rps)
    rate = f"{rate_rps:.3g} requests/s"
    if setting != AUTO:
        return WorkerChoice(int(setting), rate_rps, f"workload.client_workers={setting}; {rate} "
                                                     f"needs {need}")  # fmt: skip
    keep = server_cores(device, cores.n)
    spare = max(1, cores.n - keep)
    basis = (f"auto: {cores.n} cores ({cores.source}), {keep} kept for the {device} server, "
             f"{spare} for the client; {rate} needs {need} at {WORKER_RPS:g} each")  # fmt: skip
    return WorkerChoice(min(spare, need), rate_rps, basis)


def valid_setting(value: object) -> bool:
    """``workload.client_workers``: a positive int or ``auto``."""
    if isinstance(value, bool):
        return False
    return value == AUTO or (isinstance(value, int) and value >= 1)


def turns_per_job(jobs: Sequence[Any]) -> float:
    """Mean turns (requests) per job of a cell's jobs (``workloads.JobSpec``)."""
    return sum(j.n_turns for j in jobs) / len(jobs) if jobs else 0.0
