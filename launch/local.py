"""Local execution: cells one after another, each a submitit local job, with progress.

The launcher (this foreground process) holds the sweep folder's lock (``launch.cli``), records
itself in ``<sweep>/_submitit/launcher.json`` while it runs (``launch.procs``), and treats
SIGINT (Ctrl-C), SIGTERM (``python -m launch cancel <sweep>`` from another terminal) and SIGHUP
(its terminal closed) alike: it sends SIGTERM to the current job's submitit controller, which
forwards it to the cell, which records itself as interrupted and stops its server; finished
cells are untouched and the same command resumes the sweep (it reruns the interrupted cells).
The controller runs in its own session (``submit.SessionLocalExecutor``), so Ctrl-C reaches the
launcher alone: only the launcher decides how the cell stops.
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
from launch import procs, submit

log = logging.getLogger(__name__)

STOP_GRACE_S = 90.0  # a cell stops its server within ~20 s; then the controller is cut short
RESEND_S = 5.0  # SIGTERM again while the job runs (a cell just starting may not have its handler)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXIT_CANCELLED = 128 + signal.SIGTERM  # the launcher's exit status after `launch cancel`


class _StopRequest:
    """Handler of SIGTERM, SIGINT and SIGHUP: raise KeyboardInterrupt for the first, except
    inside ``deferred()`` (a job being submitted and recorded), where it is raised when the
    block ends; later signals are remembered only (the stop under way goes on)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGTERM
        self._defer = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __call__(self, signum, frame) -> None:
        first = not self.requested
        self.requested = True
        if first:
            self.signum = signum
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
            raise KeyboardInterrupt(f"received {self.name}")

    @contextlib.contextmanager
    def installed(self):
        """Handle the stop signals; SIGINT and SIGHUP only if not ignored (``nohup``, a job
        started with ``&`` by a script: those keep running as they were asked to)."""
        old = {s: signal.signal(s, self) for s in STOP_SIGNALS
               if s == signal.SIGTERM or signal.getsignal(s) is not signal.SIG_IGN}  # fmt: skip
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def run_serially(p, todo, console: Console) -> list:
    """Run ``todo`` cells of plan ``p`` one at a time; return the cells that failed. The
    caller holds the sweep folder's lock. Stopped by SIGTERM, SIGINT or SIGHUP, it stops the
    running cell cleanly and exits with status 128 + the signal (143 for ``launch cancel``,
    130 for Ctrl-C)."""
    stop = _StopRequest()
    try:
        with procs.launcher_record(p.sweep.path), stop.installed():
            return _run(p, todo, console, stop)
    except KeyboardInterrupt:
        if not stop.requested:  # raised before the handler was installed
            stop.signum = signal.SIGINT
        with contextlib.suppress(OSError):
            console.print(f"[yellow]cancelled[/] ({stop.name}): the running cell was stopped "
                          "and recorded as interrupted; finished cells are kept. Resume with "
                          "the same command.", highlight=False)  # fmt: skip
        raise SystemExit(128 + stop.signum) from None


def _run(p, todo, console: Console, stop: _StopRequest) -> list:
    failed = []
    rerun = {p.cell_dir(c) for c in p.rerun()}  # before they run: they are complete until then
    cols = [
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ]  # fmt: skip
    with Progress(*cols, console=console, transient=False) as prog:
        cells_bar = prog.add_task("cells", total=len(todo))
        ran: set = set()  # folders of the groups run so far
        jobs_bar = prog.add_task("jobs of the current cell", total=None)
        for group in submit.server_groups([(c, p.configs[c], p.cell_dir(c)) for c in todo]):
            cfg = group[0][1]
            ex = submit.local_executor(p.sweep.path, cfg)
            job = None
            try:
                with stop.deferred():
                    job = ex.submit(
                        submit.CellJob(int(cfg.cluster.max_requeue)),
                        *submit.job_args(group, rerun),
                    )
                    p.sweep.add_submission({"time": time.time(), "executor": "local",
                                            "host": procs.host(), "launcher_pid": os.getpid(),
                                            "jobs": [{"cell": c.rel_dir, "job_id": job.job_id}
                                                     for c, _, _ in group]})  # fmt: skip
                _follow(job, group, prog, cells_bar, jobs_bar, rerun)
                job.result()
            except KeyboardInterrupt:
                if job is not None:
                    running = [c.rel_dir for c, _, d in group
                               if not records.is_done(d) or d in rerun]  # fmt: skip
                    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP)
                        prog.stop()
                        console.print(f"{stop.name}: stopping {', '.join(running)} (its records "
                                      "are written, its server stopped; up to a minute)",
                                      highlight=False, soft_wrap=True)  # fmt: skip
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
            ran.update(d for _, _, d in group)
            prog.update(
                cells_bar,
                completed=sum((records.is_done(d) and (d not in rerun or d in ran)) or c in failed
                              for c, _, d in _all(p, todo)),
            )  # fmt: skip
    return failed


def _stop_job(job, sweep_path, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a local job so that its cell unwinds: SIGTERM to its controller, which forwards it
    to the cell (harness.cell turns it into a clean stop of its server). submitit's own cancel
    (SIGINT to the controller) kills the cell one second after signalling it, so it comes only
    if the cell has not ended within ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while not job.done() and time.monotonic() < deadline:
        # Again every few seconds: a cell still starting (before its handler is installed,
        # submitit ignores SIGTERM) gets it once it listens; a stopping cell only logs it.
        for pid in procs.controller_pids(int(job.job_id), sweep_path):  # none: it has ended
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(job, min(RESEND_S, max(0.0, deadline - time.monotonic())))
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


def _follow(job, group, prog, cells_bar, jobs_bar, rerun=frozenset()) -> None:
    """Update the bars from the running cell's progress.json until the job ends."""
    done_before = int(prog.tasks[cells_bar].completed)
    t0 = time.time()
    while not job.done():
        finished = 0
        for cell, _, d in group:
            if records.is_done(d) and (d not in rerun or _mtime(d / records.DONE) >= t0):
                finished += 1
                continue
            got = records.read_progress(d)
            if got:
                workers = f" ({got.client_workers} client workers)" if (
                    got.client_workers or 1) > 1 else ""
                prog.update(jobs_bar, description=f"jobs of {cell.rel_dir}{workers}",
                            completed=got.jobs_done, total=got.jobs_total)
            break
        prog.update(cells_bar, completed=done_before + finished)
        time.sleep(1)


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _wait_gone(job, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
