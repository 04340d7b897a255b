"""A client that scales past one core: one Poisson process of jobs, sent by several processes.

:class:`ShardedClient` has :class:`harness.client.AgentClient`'s surface (``run``, ``abort``,
``now``, ``started``, ``jobs_done``, ``jobs_total``, ``abort_reason``); :func:`make_client`
picks one of the two from the number of workers (:mod:`harness.workers` chooses it). The
workload's jobs are dealt round-robin in arrival order (:func:`deal`) over W worker processes,
so each runs every W-th arrival (a Poisson process of rate jps / W; together, the workload's
own arrivals). Each worker runs an ``AgentClient`` over its share, in its own event loop with
its own connection pools, with every job's priority its rank by arrival over the whole
workload, against one clock: the parent picks t0, a ``time.perf_counter()`` value (Linux:
CLOCK_MONOTONIC, one clock for every process of the host), once every worker has made its
records and waits, and arrival times count from it in every process. The workers' records
merge into one result, as one client's: the same rows, columns and order.

Each worker (:mod:`harness.shard_worker`) talks to the parent over its own pipe, in pickled
tuples. Worker to parent: ``hello`` (imports done), ``ready`` (records made, waiting for t0),
``progress`` (its jobs done), ``log`` (its log records, re-logged here into the cell's
client.log), ``result`` (its ClientResult), ``error`` (its own failure). Parent to worker:
``setup`` (its jobs, ranks, options and the server's API key: the key travels only through
the pipe, never argv, the environment or a file), ``start`` (t0), ``abort`` (a reason: its
unfinished turns become error rows, as ``AgentClient.abort``).

A worker that exits without its result (a crash, SIGKILL, the OOM killer) fails the run: the
others are aborted (their records kept), stopped after a grace (SIGTERM, then SIGKILL), every
worker is joined (no orphan, no zombie), and :class:`ClientWorkerDied` says which worker, its
pid and how it died, carrying the records there are (the lost worker's jobs as error rows).
A worker dies with the parent (``PR_SET_PDEATHSIG``: when the thread that started it ends, so
``run`` belongs on a thread that outlives it, as the cell's main thread does).

Choices:

- ``spawn``, never fork: the parent is an asyncio program with threads and open sockets; a
  fork would copy its loop and locks mid-state. A worker starts in 1-2 s on the quiet 2-core
  dev machine (its imports: openai, httpx, numpy; 5-10 s under a full test run), all before
  t0, so it costs no lag.
- pickle over the pipe, not Arrow: the seed's 150 jobs at JPS 15 (1,600 to ~13K ids a prompt)
  pickle in 48 ms to 8.5 MB and load in 0.16 s, before t0; a worker's result (a few thousand
  small rows) travels once, after its last job. Arrow would add a conversion each way and
  nothing the records need.
- asyncio, not uvloop: the loop a single-process cell runs, so workers=1 and workers=W measure
  with the same code; the client's CPU goes to openai, httpx and h11 parsing ~22 SSE chunks a
  request, not the loop (bench/client_lag.py ``--loop`` compares the two).
- t0 is :data:`START_MARGIN_S` after the last worker is ready: the ``start`` message reaches
  an idle worker in well under a millisecond, so every worker has t0 before it comes.

As with any ``spawn``, a worker imports the parent's main module first (not as
``__main__``): a script that starts a ShardedClient keeps its work under ``if __name__ ==
"__main__":``. ``python -m launch``, submitit's job runner and pytest do. multiprocessing's
resource tracker (one small process, started with the first worker) lives until the parent
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from harness import shard_worker
from harness.client import AgentClient, ClientOptions, ClientResult, arrival_ranks
from harness.errors import KvbenchError
from harness.shard_worker import Setup
from workloads.agent import JobSpec, Workload

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0  # from start to ready: a fresh interpreter's imports, its jobs
START_MARGIN_S = 0.05  # t0 is this far after the last worker is ready
ABORT_GRACE_S = 10.0  # for aborted workers to send their records before they are stopped
TERM_GRACE_S = 3.0  # between SIGTERM and SIGKILL


class LoadClient(Protocol):
    """What a cell drives: an :class:`AgentClient` or a :class:`ShardedClient`."""

    jobs_total: int
    abort_reason: str
    started: asyncio.Event  # set once the clock (t0) is set

    @property
    def jobs_done(self) -> int: ...

    def now(self) -> float: ...

    def abort(self, reason: str) -> None: ...

    async def run(self, wl: Workload) -> ClientResult: ...


class ClientWorkerDied(KvbenchError):
    """A client worker ended without its records; ``result``: the records there are."""

    def __init__(self, message: str, result: ClientResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def make_client(base_url: str, api_key: str, opts: ClientOptions,
                workers: int) -> AgentClient | ShardedClient:  # fmt: skip
    """One worker: the in-process :class:`AgentClient`; more: a :class:`ShardedClient`."""
    if workers == 1:
        return AgentClient(base_url, api_key, opts)
    return ShardedClient(base_url, api_key, opts, workers)


def deal(jobs: Sequence[JobSpec], n: int) -> list[list[JobSpec]]:
    """``jobs`` dealt round-robin in arrival order (ties by job id) into ``n`` shares."""
    order = sorted(jobs, key=lambda j: (j.arrival_s, j.job_id))
    return [order[k::n] for k in range(n)]


@dataclass
class _Worker:
    index: int  # 1-based
    proc: BaseProcess
    conn: Connection
    jobs: list[JobSpec]
    setup_sent: bool = False
    ready: bool = False
    jobs_done: int = 0
    result: ClientResult | None = None
    error: str | None = None  # the failure the worker reported
    ended: str | None = None  # how it ended ("exited with code 1"); None while it runs

    @property
    def lost(self) -> bool:
        return self.ended is not None and self.result is None


class _Lost(Exception):
    def __init__(self, worker: _Worker, why: str) -> None:
        super().__init__(why)
        self.worker = worker


class ShardedClient:
    def __init__(self, base_url: str, api_key: str, opts: ClientOptions, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: need at least one")
        self.base_url, self.opts, self.workers = base_url, opts, workers
        self._api_key = api_key
        self.jobs_total = 0
        self.abort_reason = ""
        self.started = asyncio.Event()
        self._t0 = 0.0
        self._w: list[_Worker] = []
        self._ranks: dict[int, int] = {}
        self._changed = asyncio.Event()

    @property
    def jobs_done(self) -> int:
        return sum(w.jobs_done for w in self._w)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._w if w.proc.pid is not None]

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def abort(self, reason: str) -> None:
        """End every job now: each worker's unfinished turns become error rows."""
        self.abort_reason = reason
        for w in self._w:
            if w.setup_sent and w.ended is None:
                _send(w, ("abort", reason))

    async def run(self, wl: Workload) -> ClientResult:
        self.jobs_total = wl.n_jobs
        shares = [s for s in deal(wl.jobs, self.workers) if s]
        self._ranks = arrival_ranks(wl.jobs)
        loop = asyncio.get_running_loop()
        t0_unix = 0.0
        try:
            self._spawn(loop, shares)  # each gets its setup once it says hello
            await self._until(lambda w: w.ready, READY_TIMEOUT_S, "ready")
            self._t0 = time.perf_counter() + START_MARGIN_S
            t0_unix = time.time() + START_MARGIN_S
            for w in self._w:
                _send(w, ("start", self._t0))
            self.started.set()
            log.info("client: %d workers (pids %s), %s jobs each", len(self._w),
                     ", ".join(map(str, self.pids)), "/".join(str(len(w.jobs)) for w in self._w))
            if self.abort_reason:
                self.abort(self.abort_reason)
            await self._until(lambda w: w.result is not None, None, "done")
        except _Lost as e:
            why = self._describe(e.worker, str(e))
            log.error("%s", why)
            raise ClientWorkerDied(why, await self._salvage(why, loop)) from None
        finally:
            self._reap(loop)
        return self._merge(t0_unix)

    # --- the workers' lives ------------------------------------------------------------------

    def _spawn(self, loop: asyncio.AbstractEventLoop, shares: list[list[JobSpec]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        for k, jobs in enumerate(shares, 1):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=shard_worker.main, args=(theirs, os.getpid()),
                               name=f"kvbench-client-{k}", daemon=True)  # fmt: skip
            try:
                proc.start()
            except BaseException:
                mine.close()
                raise
            finally:
                theirs.close()  # only the worker holds its end: its exit is an EOF here
            w = _Worker(k, proc, mine, jobs)
            self._w.append(w)
            loop.add_reader(mine.fileno(), self._on_message, w)
            loop.add_reader(proc.sentinel, self._on_exit, loop, w)

    def _on_message(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                kind, arg = w.conn.recv()
                self._take(w, kind, arg)
        except (EOFError, OSError):  # its end closed: _on_exit says how it ended
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(w.conn.fileno())
        self._changed.set()

    def _take(self, w: _Worker, kind: str, arg: Any) -> None:
        if kind == "log":
            level, name, text = arg
            logging.getLogger(name).log(level, "client worker %d: %s", w.index, text)
        elif kind == "progress":
            w.jobs_done = arg
        elif kind == "result":
            w.result, w.jobs_done = arg, len(arg.jobs)
        elif kind == "error":
            w.error = arg
        elif kind == "hello":  # its imports are done: it reads its setup now
            _send(w, ("setup", Setup(w.index, self.base_url, self._api_key, self.opts, w.jobs,
                                      {j.job_id: self._ranks[j.job_id] for j in w.jobs})))
            w.setup_sent = True
        elif kind == "ready":
            w.ready = True

    def _on_exit(self, loop: asyncio.AbstractEventLoop, w: _Worker) -> None:
        loop.remove_reader(w.proc.sentinel)
        self._on_message(w)  # what it sent before it ended
        w.proc.join(1.0)
        w.ended = _how(w.proc.exitcode)
        self._changed.set()

    async def _until(self, done: Callable[[_Worker], bool], timeout: float | None,
                     what: str) -> None:  # fmt: skip
        """Wait until ``done`` holds for every worker; _Lost if one ends without its records
        first, or is not ``what`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            lost = next((w for w in self._w if w.lost), None)
            if lost is not None:
                raise _Lost(lost, "")
            if all(done(w) for w in self._w):
                return
            self._changed.clear()
            if deadline is not None and loop.time() >= deadline:
                late = next(w for w in self._w if not done(w))
                raise _Lost(late, f"not {what} after {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if deadline is None else deadline - loop.time()):
                    await self._changed.wait()

    def _describe(self, w: _Worker, why: str) -> str:
        how = why or (f"failed ({w.error}), {w.ended}" if w.error else f"died: {w.ended}")
        return (f"client worker {w.index} of {len(self._w)} (pid {w.proc.pid}) {how}; the cell's "
                f"records are incomplete")  # fmt: skip

    async def _salvage(self, why: str, loop: asyncio.AbstractEventLoop) -> ClientResult:
        """Abort the workers still running, wait a grace for their records; the records there
        are, with the lost workers' jobs as error rows."""
        self.abort(why)
        with contextlib.suppress(_Lost, TimeoutError):
            async with asyncio.timeout(ABORT_GRACE_S):
                while any(w.result is None and w.ended is None for w in self._w):
                    self._changed.clear()
                    await self._changed.wait()
        res = self._merge(time.time() - self.now() if self.started.is_set() else time.time())
        for w in self._w:
            if w.result is None:
                _lost_rows(w.jobs, res, f"record lost: {why}")
        return _sorted(res)

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every worker ended and joined: those done get a moment to exit, the rest SIGTERM,
        then SIGKILL."""
        for w in self._w:
            with contextlib.suppress(Exception):
                loop.remove_reader(w.conn.fileno())
            with contextlib.suppress(Exception):
                loop.remove_reader(w.proc.sentinel)
        for w in self._w:
            if w.result is not None:
                w.proc.join(TERM_GRACE_S)
        for w in self._w:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in self._w:
            w.proc.join(TERM_GRACE_S)
            if w.proc.is_alive():
                log.warning("client worker %d (pid %s) ignored SIGTERM: killed", w.index,
                            w.proc.pid)  # fmt: skip
                w.proc.kill()
                w.proc.join()
            w.conn.close()

    def _merge(self, t0_unix: float) -> ClientResult:
        parts = [w.result for w in self._w if w.result is not None]
        res = ClientResult(t0_unix=t0_unix, workers=len(self._w))
        for p in parts:
            res.turns += p.turns
            res.jobs += p.jobs
        res.wall_s = max((p.wall_s for p in parts), default=0.0)
        return _sorted(res)


def _sorted(res: ClientResult) -> ClientResult:
    res.turns.sort(key=lambda r: (r.job_id, r.turn))
    res.jobs.sort(key=lambda r: r.job_id)
    return res


def _lost_rows(jobs: list[JobSpec], res: ClientResult, why: str) -> None:
    for job in jobs:
        _, _, rows = AgentClient._records(job, res)
        for tr in rows:
            tr.status, tr.error = "error", why


def _send(w: _Worker, msg: tuple) -> None:
    with contextlib.suppress(OSError):  # it ended: _on_exit says how
        w.conn.send(msg)


def _how(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}" if code else "exited without its records"
