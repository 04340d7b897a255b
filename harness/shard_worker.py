"""A client worker process (:mod:`harness.shards`): its share of a cell's jobs, on the parent's
clock, in its own event loop.

Spawned with :func:`main` as its target. It says ``hello`` once its imports are done, reads
its :class:`Setup`, makes its records and says ``ready``, then runs its jobs from the ``start``
(t0) the parent sends, reporting ``progress``; an ``abort`` ends its jobs as
``AgentClient.abort`` does. It sends its ``result`` and exits; a failure of its own is sent
as ``error`` and it exits 1. Its log records go to the parent (the cell's client.log), but
httpx's per-request INFO line (the turns file has it all; forwarded, it would be one pipe
message per request). It dies with the parent (``PR_SET_PDEATHSIG``) and ignores SIGINT and
SIGHUP: a Ctrl-C or a closed terminal reaches the cell, which decides, and aborts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from harness.client import AgentClient, ClientOptions, ClientResult
from workloads.agent import JobSpec

PROGRESS_S = 0.2  # a worker reports its jobs done at most this often
PR_SET_PDEATHSIG = 1


@dataclass
class Setup:
    """What a worker runs, sent through its pipe (the API key only there)."""

    index: int  # 1-based
    base_url: str
    api_key: str = field(repr=False)
    opts: ClientOptions = field(repr=False)
    jobs: list[JobSpec] = field(repr=False)
    ranks: dict[int, int] = field(repr=False)


def main(conn: Connection, parent: int) -> None:
    """A worker's entry point (spawned): its share of the jobs, on the parent's clock."""
    _die_with_parent(parent)
    for s in (signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    try:
        conn.send(("hello", None))
        _, setup = conn.recv()
        _log_to_parent(conn)
        res = asyncio.run(_serve(conn, setup))
        conn.send(("result", res))
    except BaseException as e:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(e).__name__}: {e}"))
        raise


async def _serve(conn: Connection, setup: Setup) -> ClientResult:
    loop = asyncio.get_running_loop()
    client = AgentClient(setup.base_url, setup.api_key, setup.opts)
    t0: asyncio.Future[float] = loop.create_future()

    def on_message() -> None:
        try:
            while conn.poll():
                kind, arg = conn.recv()
                if kind == "start" and not t0.done():
                    t0.set_result(arg)
                elif kind == "abort":
                    client.abort(arg)
        except (EOFError, OSError):  # the parent is gone (its death signal ends this too)
            loop.remove_reader(conn.fileno())
            client.abort("the cell's process is gone")
        if client.abort_reason and not t0.done():
            t0.set_result(time.perf_counter())

    async def start() -> float:
        conn.send(("ready", None))
        return await t0

    loop.add_reader(conn.fileno(), on_message)
    progress = asyncio.create_task(_progress(conn, client))
    try:
        return await client.run_jobs(setup.jobs, setup.ranks, start)
    finally:
        progress.cancel()
        loop.remove_reader(conn.fileno())


async def _progress(conn: Connection, client: AgentClient) -> None:
    sent = -1
    with contextlib.suppress(OSError):  # the parent is gone
        while True:
            if client.jobs_done != sent:
                sent = client.jobs_done
                conn.send(("progress", sent))
            await asyncio.sleep(PROGRESS_S)


class _PipeLog(logging.Handler):
    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.conn.send(("log", (record.levelno, record.name, text)))
        except Exception:  # noqa: BLE001 - logging never fails the worker
            self.handleError(record)


def _log_to_parent(conn: Connection) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_PipeLog(conn)]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); if it died already, exit now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
