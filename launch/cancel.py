"""``cancel``: stop a sweep's queued and running cells; finished cells are untouched.

On SLURM: ``scancel`` the jobs of the sweep's latest submissions that are still queued or
running (``status.slurm_states``), then wait until they leave the queue. SLURM signals every
process of a job with SIGTERM (then SIGKILL after its KillWait): the cell turns it into a clean
stop of its vLLM server and writes its manifest (``harness.cell``).

Locally: SIGTERM to the foreground ``python -m launch sweep`` recorded in
``<sweep>/_submitit/launcher.json`` (only if that pid is alive, on this host, and a ``launch``
process started when the record says), then wait until it exits: the launcher stops its
current job as on Ctrl-C (``launch.local``). A local job whose launcher is gone (killed) is
stopped through its submitit controller.

Either way the cancel is recorded in ``<sweep>/_submitit/cancelled.json`` so ``status`` shows
those cells as cancelled, and running the same ``sweep`` command again reruns them (a cell's
earlier files move to ``_attempts/<n>/`` when it next runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from rich.console import Console

from harness import records
from harness.cellkey import CellKey
from launch import procs, sweepdir
from launch import status as st

WAIT_S = 180.0  # for the jobs to leave the queue / the launcher to exit


def _say(console: Console, text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def cancel(path: Path, console: Console, wait_s: float = WAIT_S) -> int:
    sweep = sweepdir.load(path)  # not a sweep folder: ConfigError (exit 2)
    t0 = time.monotonic()
    n_slurm, rc_slurm = _cancel_slurm(sweep, console, wait_s)
    n_local, rc_local = _cancel_local(sweep, console, wait_s)
    rc = max(rc_slurm, rc_local)
    if not (n_slurm or n_local):
        if rc == 0:
            _say(console, f"nothing to cancel: no job of {sweep.path} is queued or running")
        return rc
    _, rows = st.collect(sweep.path)
    _say(console, f"{st.totals_line(st.totals(rows))} ({time.monotonic() - t0:.0f} s)")
    _say(
        console,
        "finished cells are kept; run the same sweep command again to rerun the cancelled cells",
    )
    return rc


def _not_done(sweep: sweepdir.SweepDir, cells) -> list[str]:
    return [c for c in cells if not records.is_done(sweep.cell_dir(CellKey.from_rel(c)))]


# --- SLURM ------------------------------------------------------------------------------------


def _cancel_slurm(sweep: sweepdir.SweepDir, console: Console, wait_s: float) -> tuple[int, int]:
    """(cells cancelled, exit status)."""
    states = st.slurm_states(sweep)
    jobs = st.last_jobs(sweep)
    active = {c: jobs[c][1] for c, s in states.items() if st.is_active(s)}
    cells = _not_done(sweep, sorted(active))
    if not cells:
        return 0, 0
    ids = sorted({active[c] for c in cells})
    for jid in ids:
        mine = [c for c in cells if active[c] == jid]
        _say(console, f"scancel {jid} ({states[mine[0]]}): {', '.join(mine)}")
    r = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60)
    if r.returncode:
        _say(console, f"[yellow]scancel exited {r.returncode}[/]: {r.stderr.strip()}")
    when = time.time()
    st.record_cancel(sweep.path, when, "slurm", [{"cell": c, "job_id": active[c]} for c in cells])
    left = _wait_slurm(sweep, set(ids), wait_s)
    if left:
        _say(
            console,
            f"[yellow]still in the queue after {wait_s:.0f} s[/]: {', '.join(left)} "
            f"(python -m launch status {sweep.path})",
        )
        return len(cells), 1
    _say(console, f"cancelled {len(ids)} SLURM job(s), {len(cells)} cell(s); none left queued")
    return len(cells), 0


def _wait_slurm(sweep: sweepdir.SweepDir, ids: set[str], wait_s: float) -> list[str]:
    """Wait until neither squeue nor sacct shows these jobs as queued or running."""
    deadline = time.monotonic() + wait_s
    while True:
        jobs = st.last_jobs(sweep)
        left = sorted({jobs[c][1] for c, s in st.slurm_states(sweep).items()
                       if st.is_active(s) and jobs[c][1] in ids})  # fmt: skip
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1.0)


# --- local ------------------------------------------------------------------------------------


def _local_running(sweep: sweepdir.SweepDir) -> dict[str, str]:
    """Local cells whose job still runs here: cell -> job id (the controller's pid)."""
    jobs = st.last_jobs(sweep)
    live = [c for c, s in st.local_states(sweep).items() if st.is_active(s)]
    return {c: jobs[c][1] for c in _not_done(sweep, live)}


def _cancel_local(sweep: sweepdir.SweepDir, console: Console, wait_s: float) -> tuple[int, int]:
    """(cells cancelled, or 1 for a launcher stopped with no cell running; exit status)."""
    launcher = procs.read_launcher(sweep.path)
    if launcher is not None and not launcher.here:
        _say(
            console,
            f"[yellow]the sweep's launcher runs on {launcher.host} (pid "
            f"{launcher.pid}), not here: run cancel there[/]",
        )
        return 0, 1
    running = _local_running(sweep)
    if launcher is not None and launcher.alive():
        started = time.strftime("%H:%M:%S", time.localtime(launcher.started_unix))
        _say(
            console,
            f"stopping the local launcher (pid {launcher.pid}, started {started})"
            + (f"; running: {', '.join(running)}" if running else ""),
        )
        targets = [launcher.pid]
    elif running:  # the launcher is gone but its job is not: stop the job's controller
        targets = sorted({p for jid in set(running.values())
                          for p in procs.controller_pids(int(jid), sweep.path)})  # fmt: skip
        _say(
            console,
            f"no launcher; stopping local job(s) {', '.join(map(str, targets))}: "
            f"{', '.join(running)}",
        )
    else:
        return 0, 0
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    st.record_cancel(sweep.path, time.time(), "local",
                     [{"cell": c, "job_id": j} for c, j in running.items()])  # fmt: skip
    # The launcher first waits for its job (the cell stops its server), so wait for both.
    job_pids = [int(j) for j in set(running.values())]
    left = procs.wait_gone([*targets, *job_pids], wait_s)
    if left:
        _say(console, f"[yellow]still running after {wait_s:.0f} s[/]: pid(s) {left}")
        return max(len(running), 1), 1
    stopped = _not_done(sweep, running)
    _say(
        console, f"stopped; {len(stopped)} cell(s) cancelled" + "".join(f"\n  {c}" for c in stopped)
    )
    return max(len(running), 1), 0
