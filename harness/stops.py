"""How a cell turns stop signals into a clean stop, and how it words why it ended.

SIGTERM/SIGINT/SIGHUP (scancel, ``launch cancel``, Ctrl-C, a closed terminal) unwind the cell
(:func:`signals_raise`), so the server context manager stops the server group and the manifest
is written before the process exits; the scheduler's pre-emption / time-out signal (SIGUSR2
under submitit) is remembered and passed on to submitit's handler. :func:`failure` gives the
manifest's status and error for a cell that ended with an exception: ``interrupted`` naming
the signal when one came, else ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from harness.errors import KvbenchError

log = logging.getLogger(__name__)

PREEMPTED = "pre-empted or timed out: the scheduler's signal; submitit requeues the cell if it can"


class Interrupted(KvbenchError):
    pass


class Stop:
    """The stop signal this process received, if any (process-wide, as signal handlers are)."""

    got: str | None = None
    preempt: str | None = None  # the scheduler's pre-emption / time-out signal, e.g. SIGUSR2


def preempt_signal() -> signal.Signals:
    """The signal submitit takes as pre-emption / time-out (``SUBMITIT_PREEMPT_SIGNAL``)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, name, signal.SIGUSR2)


def stop_error(exc: BaseException | None = None) -> str:
    """The recorded error of a cell stopped by a signal: the signal, named, first (a server
    that exited because the same signal reached it is a consequence, not the cause)."""
    sig = Stop.got
    text = f"_Interrupted: received {sig}"
    if sig is not None and sig == Stop.preempt:
        text += f" ({PREEMPTED})"
    quiet = (KvbenchError, SystemExit, KeyboardInterrupt, asyncio.CancelledError)
    if exc is not None and not isinstance(exc, quiet):
        text += f"; then {type(exc).__name__}: {exc}"  # e.g. submitit: "Job not requeued ..."
    return text


def failure(exc: BaseException) -> tuple[str, str]:
    """(manifest status, error) of a cell that ended with ``exc``."""
    if Stop.got:
        return "interrupted", clip(stop_error(exc))
    return "failed", clip(f"{type(exc).__name__}: {exc}")


def stop_requested() -> str | None:
    return Stop.got


def raise_if_stopped() -> None:
    """Raise at a safe point if a stop signal came but its exception was swallowed where it
    landed (a request's error handler turns it into an error row; a task keeps it as its
    result; ``contextlib.suppress``)."""
    if Stop.got:
        raise Interrupted(f"received {Stop.got}")


@contextlib.contextmanager
def signals_raise():
    """SIGTERM/SIGINT/SIGHUP (scancel, ``launch cancel``, Ctrl-C, a closed terminal) unwind
    the cell, so the server context manager stops the server group before the process exits.

    The first signal raises where it lands and is remembered: if that exception is swallowed,
    the client's loop aborts its jobs (``harness.drive``) and the cell raises at its next safe
    point (:func:`raise_if_stopped`). Later signals only log: scancel signals every process of
    the step and srun forwards its own copy, and a second exception must not cut short the
    unwind that stops the server and writes the manifest."""

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if Stop.got:
            log.warning("received %s while stopping (after %s); still stopping", name, Stop.got)
            return
        Stop.got = name
        raise Interrupted(f"received {name}")

    preempt = preempt_signal()
    before = signal.getsignal(preempt)

    def on_preempt(signum, frame):
        """The scheduler's pre-emption / time-out signal: remember it (so the records name it,
        not what it causes: the server exiting, the requeue's SIGTERM), then let submitit's
        own handler checkpoint and requeue the job."""
        name = signal.Signals(signum).name
        log.warning("received %s: %s", name, PREEMPTED)
        if not Stop.got:
            Stop.got = Stop.preempt = name
        if callable(before):
            before(signum, frame)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    Stop.got = Stop.preempt = None
    for s in old:
        signal.signal(s, handler)
    if callable(before):  # only under submitit; elsewhere the signal keeps its default action
        signal.signal(preempt, on_preempt)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if callable(before):
            signal.signal(preempt, before)
        Stop.got = Stop.preempt = None


def clip(text: str, limit: int = 4000) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 4] + "\n[...]\n" + text[-3 * limit // 4 :]
