"""Without a server: the sweep folder's lock at the command line (refused in one line naming
the holder, ``--wait``), ``sweep --rerun PATTERN`` planning, the local job's controller in a
session of its own (Ctrl-C reaches the launcher alone), the launcher's stop signals, the cell's
record of a stop (interrupted; the scheduler's pre-emption named), and how ``status`` shows
interrupted cells and cells killed outright. The real thing: tests/faults/test_lock_and_stops.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import cell
from harness.cellkey import CellKey
from harness.errors import CellFailed, ConfigError
from harness.lock import FolderLock
from launch import cli, plan, procs, submit
from launch import status as st
from launch.local import _StopRequest
from tests.conftest import REPO

ARGS = ("policy=[fcfs]", "jps=[1,2]", "workload.n_jobs=2", "experiment.name=locktest")


def _plan(tmp_path: Path, *extra: str, rerun=()) -> plan.Plan:
    return plan.make([f"sweep_dir={tmp_path / 'sweep'}", *ARGS, *extra], rerun=list(rerun))


def _complete(p: plan.Plan, *cells: CellKey) -> None:
    p.sweep.save()
    for c in cells:
        d = p.cell_dir(c)
        d.mkdir(parents=True, exist_ok=True)
        (d / "DONE").write_text("x\n")


# Holds the folder's lock for hold_s seconds, then exits holding it; given a "go" file, holds
# it until that file exists, then one second more, and releases it (a first sweep that ends).
HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.lock import FolderLock
    lock = FolderLock(Path(sys.argv[1]), command="python -m launch sweep (the first)").acquire()
    print("held", flush=True)
    go = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    if go is None:
        time.sleep(float(sys.argv[2]))
        sys.exit(0)
    deadline = time.monotonic() + float(sys.argv[2])
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    lock.release()
""")


def _hold(folder: Path, hold_s: float, go: Path | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-c", HOLD, str(folder), str(hold_s), *([str(go)] if go else [])]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


# --- the sweep folder's lock at the command line ----------------------------------------------


def test_a_second_sweep_on_a_held_folder_is_refused_in_one_line(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    holder = _hold(sweep, 60)
    try:
        rc = cli.main(["sweep", f"sweep_dir={sweep}", *ARGS, "--no-report"])
        out = capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2, out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    assert f"sweep folder {sweep} is in use by pid {holder.pid} on {procs.host()} since" in line
    assert "add --wait" in line and "python -m launch cancel" in line
    assert out.strip().splitlines()[-1] == line, "one line, the last"
    assert not (sweep / "sweep.json").exists(), "nothing written by the refused command"


def test_wait_waits_for_the_holder_then_resumes(tmp_path, capsys, monkeypatch):
    p = _plan(tmp_path)
    _complete(p, *p.cells)  # so the command finds nothing to run once it holds the folder
    # The holder lets go once the command has said it waits (not after a fixed time: planning
    # can take longer than that on a loaded machine, and the holder was gone before it looked).
    go = tmp_path / "go"
    acquire = FolderLock.acquire

    def told_then_go(self, wait=False, timeout_s=None, poll_s=0.5, on_wait=None):
        def waiting(holder):
            if on_wait is not None:
                on_wait(holder)
            go.touch()

        return acquire(self, wait, timeout_s, poll_s, waiting)

    monkeypatch.setattr(FolderLock, "acquire", told_then_go)
    holder = _hold(p.sweep.path, 120, go)
    try:
        t0 = time.monotonic()
        rc = cli.main(["sweep", f"sweep_dir={p.sweep.path}", *ARGS, "--wait", "--no-report"])
        waited = time.monotonic() - t0
        out = capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    assert rc == 0, out
    assert f"waiting: sweep folder {p.sweep.path} is in use by pid {holder.pid}" in out
    assert "every cell is complete; nothing to run" in out
    assert waited > 1.0
    assert FolderLock(p.sweep.path).acquire().took_over is None  # released, cleanly


def test_a_lock_left_by_a_dead_launcher_is_taken_over_in_one_line(tmp_path, capsys):
    p = _plan(tmp_path)
    _complete(p, *p.cells)
    holder = _hold(p.sweep.path, 60)
    holder.kill()
    holder.wait()
    rc = cli.main(["sweep", f"sweep_dir={p.sweep.path}", *ARGS, "--no-report"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (line,) = [x for x in out.splitlines() if "took over the lock" in x]
    assert f"left by pid {holder.pid} on {procs.host()}" in line, line


# --- sweep --rerun PATTERN --------------------------------------------------------------------


def test_rerun_patterns_name_complete_cells_to_run_again(tmp_path):
    p = _plan(tmp_path)
    one, two = p.cells
    _complete(p, one, two)
    assert p.todo() == [] and p.rerun() == []
    p = _plan(tmp_path, rerun=["gpu=cpu/dram=*/policy=fcfs/*/jps=1"])
    assert p.rerun() == [one] and p.todo() == [one]
    # a folder above cells names them all; patterns repeat
    assert _plan(tmp_path, rerun=["gpu=cpu/dram=8/policy=fcfs"]).rerun() == [one, two]
    assert _plan(tmp_path, rerun=["*jps=1", "*jps=2"]).todo() == [one, two]
    # a cell that is not complete simply runs; the pattern does not make it a rerun
    (p.cell_dir(two) / "DONE").unlink()
    p = _plan(tmp_path, rerun=["*"])
    assert p.rerun() == [one] and p.todo() == [one, two]


def test_a_rerun_pattern_that_names_no_cell_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--rerun policy=lmcache/.*names no cell of this sweep"):
        _plan(tmp_path, rerun=["policy=lmcache/*"])


def test_the_plan_table_shows_reruns_and_a_dry_run_moves_nothing(tmp_path, capsys):
    p = _plan(tmp_path)
    _complete(p, *p.cells)
    d = p.cell_dir(p.cells[0])
    rc = cli.main(["sweep", f"sweep_dir={p.sweep.path}", *ARGS, "--dry-run",
                   "--rerun", "*/jps=1"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("│ rerun ") == 1 and out.count("│ done (skipped) ") == 1, out
    assert (d / "DONE").exists() and not (d / "_attempts").exists()


def test_job_args_carry_the_reruns_and_a_requeue_drops_them(tmp_path):
    p = _plan(tmp_path)
    items = [(c, p.configs[c], p.cell_dir(c)) for c in p.cells]
    (group,) = submit.server_groups(items)
    yamls, dirs, rerun = submit.job_args(group, [p.cell_dir(p.cells[1])])
    assert len(yamls) == len(dirs) == 2 and rerun == [str(p.cell_dir(p.cells[1]))]
    assert submit.job_args(group)[2] == []
    again = submit.CellJob(3).checkpoint(yamls, dirs, rerun)
    assert again.args == (yamls, dirs), "a requeued job never moves a cell it completed"


# --- stopping a local sweep -------------------------------------------------------------------


def _answer() -> tuple[int, int, int]:
    return os.getpid(), os.getpgid(0), os.getsid(0)


def test_the_local_jobs_controller_runs_in_its_own_session(tmp_path):
    """Ctrl-C goes to the terminal's foreground process group: the controller and the cell are
    not in it, so only the launcher gets it (and stops the job with SIGTERM)."""
    ex = submit.SessionLocalExecutor(folder=tmp_path / "_submitit")
    ex.update_parameters(timeout_min=2)
    job = ex.submit(_answer)
    pid, pgid, sid = job.result()
    ctl = int(job.job_id)
    assert sid != os.getsid(0) and pgid != os.getpgid(0)
    assert sid == ctl == pgid, "the controller leads its session; the cell is in it"
    assert pid != ctl
    assert subprocess.Popen.__module__ == "subprocess"  # nothing left swapped


def test_the_launcher_stops_on_sigint_sigterm_and_sighup():
    stop = _StopRequest()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with stop.installed():
        with pytest.raises(KeyboardInterrupt, match="received SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert stop.requested and stop.name == "SIGINT" and 128 + stop.signum == 130
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping: remembered only
        time.sleep(0.05)
        assert stop.name == "SIGINT"
    assert {s: signal.getsignal(s) for s in before} == before


# --- what a stopped cell records --------------------------------------------------------------


def test_the_schedulers_preemption_is_named_not_the_server_exit_it_causes():
    """SIGUSR2 (submitit's pre-emption / time-out signal) reaches the server too, which exits
    (code 0); the cell's error names the signal, and submitit's handler still runs."""
    calls = []

    def submitit_handler(signum, frame):  # stands in for checkpoint_and_try_requeue
        calls.append(signum)

    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with cell._signals_raise():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert calls == [signal.SIGUSR2]
            status, error = cell._failure(CellFailed("server exited (code 0) during the cell"))
            assert status == "interrupted"
            assert error.startswith("_Interrupted: received SIGUSR2 (pre-empted or timed out")
            assert "server exited" not in error
            os.kill(os.getpid(), signal.SIGTERM)  # the requeue's SIGTERM: logged, not raised
            time.sleep(0.05)
            assert cell._stop_requested() == "SIGUSR2"
            why = cell._failure(RuntimeError("Job not requeued because: timed-out too many times"))
            assert why[1].endswith("; then RuntimeError: Job not requeued because: timed-out "
                                   "too many times")  # fmt: skip
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert cell._failure(ValueError("x")) == ("failed", "ValueError: x")


def test_outside_submitit_sigusr2_keeps_its_default_action():
    with cell._signals_raise():
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


# --- status -----------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _man(d: Path, **kw) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps(kw))
    return d


def test_a_cell_killed_outright_is_failed_with_the_reason(tmp_path):
    """``launch cell`` has no job to ask: the pid its manifest records decides."""
    gone = _dead_pid()
    here = procs.host()
    d = _man(tmp_path / "c", status="running",
             process={"pid": gone, "host": here, "started_unix": time.time() - 5})
    (d / "progress.json").write_text(json.dumps({"jobs_done": 1, "jobs_total": 4}))
    state, detail = st.cell_state(d, None)
    assert state == "failed", detail
    assert f"its process (pid {gone} on {here}) is gone" in detail
    assert "killed without a word (SIGKILL" in detail
    # alive (this process): running; another host: cannot tell, the folder decides
    me = {"pid": os.getpid(), "host": here, "started_unix": psutil_start()}
    _man(d, status="running", process=me)
    assert st.cell_state(d, None) == ("running", "jobs 1/4")
    _man(d, status="running", process={**me, "pid": gone, "host": "elsewhere"})
    assert st.cell_state(d, None)[0] == "running"
    # a pid reused by another process: gone all the same
    _man(d, status="running", process={**me, "started_unix": me["started_unix"] - 1000})
    assert st.cell_state(d, None)[0] == "failed"
    # a local job that ended while the manifest says running
    _man(d, status="running", process={**me, "host": "elsewhere"})
    state, detail = st.cell_state(d, "ENDED (local)")
    assert state == "failed" and detail.startswith("its job ended while its manifest still says "
                                                   "running: killed without a word")  # fmt: skip


def psutil_start() -> float:
    import psutil

    return psutil.Process(os.getpid()).create_time()


def test_an_interrupted_cell_is_cancelled_if_a_person_stopped_it_else_failed(tmp_path):
    d = _man(tmp_path / "c", status="interrupted", error="_Interrupted: received SIGINT")
    assert st.cell_state(d, "ENDED (local)") == ("cancelled",
                                                 "no job left; _Interrupted: received SIGINT")
    assert st.cell_state(d, None)[0] == "cancelled"
    d = _man(tmp_path / "p", status="interrupted",
             error="_Interrupted: received SIGUSR2 (pre-empted or timed out: ...)")
    assert st.cell_state(d, "TIMEOUT")[0] == "failed"
    assert st.cell_state(d, "PENDING") == (
        "pending", "requeued after: _Interrupted: received SIGUSR2 (pre-empted or timed out: ...)")


def test_analysis_counts_an_interrupted_cell_as_failed():
    import pandas as pd

    from analysis import validity

    r = pd.Series({"folder": True, "manifest_status": "interrupted", "lag_flag": False})
    assert validity._state(r, 0.0) == "failed"
