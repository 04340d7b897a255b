"""Local execution: cells one after another, each a submitit local job, with progress.

The launcher (this foreground process) records itself in ``<sweep>/_submitit/launcher.json``
while it runs (``launch.procs``) and treats SIGTERM like Ctrl-C: ``python -m launch cancel
<sweep>`` sends it from another terminal. The launcher then sends SIGTERM to the current
job's submitit controller, which forwards it to the cell, which writes its records and stops
its server; finished cells are untouched and the same command resumes the sweep. (Ctrl-C in
the terminal also reaches the controller itself, which kills the cell a second later:
docs/follow-and-stop.md.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time

import submitit
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import records
from harness.errors import ConfigError
from launch import procs, submit

log = logging.getLogger(__name__)

STOP_GRACE_S = 90.0  # a cell stops its server within ~20 s; then the controller is cut short
EXIT_CANCELLED = 128 + signal.SIGTERM  # the launcher's exit status after `launch cancel`


def _jobs_progress(cell_dir) -> tuple[int, int] | None:
    try:
        d = json.loads((cell_dir / records.PROGRESS).read_text())
        return int(d["jobs_done"]), int(d["jobs_total"])
    except (OSError, ValueError, KeyError):
        return None


class _StopRequest:
    """SIGTERM handler: raise KeyboardInterrupt (as Ctrl-C does), except inside ``deferred()``
    (a job being submitted and recorded), where it is raised when the block ends."""

    def __init__(self) -> None:
        self.requested = False
        self._defer = False

    def __call__(self, signum, frame) -> None:
        first = not self.requested
        self.requested = True
        if first and not self._defer:
            raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def deferred(self):
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.requested:
            raise KeyboardInterrupt("received SIGTERM")

    @contextlib.contextmanager
    def installed(self):
        old = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, old)


def run_serially(p, todo, console: Console) -> list:
    """Run ``todo`` cells of plan ``p`` one at a time; return the cells that failed.
    Exits with status 143 when stopped by SIGTERM (``launch cancel``)."""
    other = procs.read_launcher(p.sweep.path)
    if other is not None and other.alive() and other.pid != os.getpid():
        raise ConfigError(f"{p.sweep.path} is being run by another launcher (pid {other.pid}); "
                          f"stop it with: python -m launch cancel {p.sweep.path}")  # fmt: skip
    stop = _StopRequest()
    try:
        with procs.launcher_record(p.sweep.path), stop.installed():
            return _run(p, todo, console, stop)
    except KeyboardInterrupt:
        if not stop.requested:
            raise  # Ctrl-C: as before
        console.print("[yellow]cancelled[/] (SIGTERM): the running cell was stopped; finished "
                      "cells are kept. Resume with the same command.", highlight=False)  # fmt: skip
        raise SystemExit(EXIT_CANCELLED) from None


def _run(p, todo, console: Console, stop: _StopRequest) -> list:
    failed = []
    cols = [
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ]  # fmt: skip
    with Progress(*cols, console=console, transient=False) as prog:
        cells_bar = prog.add_task("cells", total=len(todo))
        jobs_bar = prog.add_task("jobs of the current cell", total=None)
        for group in submit.server_groups([(c, p.configs[c], p.cell_dir(c)) for c in todo]):
            cfg = group[0][1]
            ex = submit.local_executor(p.sweep.path, cfg)
            job = None
            try:
                with stop.deferred():
                    job = ex.submit(
                        submit.CellJob(int(cfg.cluster.max_requeue)), *submit.job_args(group)
                    )
                    p.sweep.add_submission({"time": time.time(), "executor": "local",
                                            "host": procs.host(), "launcher_pid": os.getpid(),
                                            "jobs": [{"cell": c.rel_dir, "job_id": job.job_id}
                                                     for c, _, _ in group]})  # fmt: skip
                _follow(job, group, prog, cells_bar, jobs_bar)
                job.result()
            except KeyboardInterrupt:
                if job is not None:
                    _stop_job(job, p.sweep.path)
                raise
            except (
                submitit.core.utils.FailedJobError,
                submitit.core.utils.UncompletedJobError,
            ) as e:
                bad = [c for c, _, d in group if not records.is_done(d)]
                failed += bad
                why = _why(next((d for c, _, d in group if c in bad), group[0][2]), e)
                console.print(f"[red]{len(bad)} cell(s) failed[/] "
                              f"({', '.join(c.rel_dir for c in bad)}): {why}",
                              highlight=False)  # fmt: skip
            prog.update(
                cells_bar,
                completed=sum(records.is_done(d) or c in failed for c, _, d in _all(p, todo)),
            )
    return failed


def _stop_job(job, sweep_path, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a local job so that its cell unwinds: SIGTERM to its controller, which forwards it
    to the cell (harness.cell turns it into a clean stop of its server). submitit's own cancel
    (SIGINT to the controller) kills the cell one second after signalling it, so it comes only
    if the cell has not ended within ``grace_s``."""
    for pid in procs.controller_pids(int(job.job_id), sweep_path):  # none: it has ended
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_gone(job, grace_s)
    if not job.done():
        log.warning("local job %s still running %.0f s after SIGTERM; cancelling it",
                    job.job_id, grace_s)  # fmt: skip
        job.cancel()
        _wait_gone(job, 15)


def _why(cell_dir, exc: Exception) -> str:
    try:
        err = json.loads((cell_dir / records.MANIFEST).read_text()).get("error")
    except (OSError, ValueError):
        err = None
    lines = (err or str(exc)).strip().splitlines() or ["?"]
    return "\n".join(lines[:1] + lines[-12:]) if len(lines) > 1 else lines[0]


def _all(p, todo):
    return [(c, p.configs[c], p.cell_dir(c)) for c in todo]


def _follow(job, group, prog, cells_bar, jobs_bar) -> None:
    """Update the bars from the running cell's progress.json until the job ends."""
    done_before = int(prog.tasks[cells_bar].completed)
    while not job.done():
        finished = 0
        for cell, _, d in group:
            if records.is_done(d):
                finished += 1
                continue
            got = _jobs_progress(d)
            if got:
                prog.update(
                    jobs_bar, description=f"jobs of {cell.rel_dir}", completed=got[0], total=got[1]
                )
            break
        prog.update(cells_bar, completed=done_before + finished)
        time.sleep(1)


def _wait_gone(job, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
