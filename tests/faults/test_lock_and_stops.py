"""One writer per sweep folder, and clean stops (issue 14, parts 1 and 2; docs/follow-and-stop.md).

1. **Two ``launch sweep`` on one folder** (a local sweep, the second started while the first
   measures): the second is refused at once in one line naming the first (its pid, host, since
   when), exit status 2; the first's finished cell stays byte-identical and its running cell
   runs on.
2. **Ctrl-C** (SIGINT to the launcher's process group, as a terminal sends it) mid-cell: the
   launcher stops the cell cleanly and exits (130); no process of the sweep is left (the vLLM
   server and its engine core included); the cell's manifest says ``interrupted``, its
   ``progress.json`` is gone, the lock is released, ``status`` shows it cancelled, and the same
   command would rerun exactly that cell.
3. **SIGKILL of a cell's process** (``launch cell`` in the foreground: no job to ask): ``status``
   shows the cell failed with the reason (its recorded pid is gone), its server goes too, and
   the next writer takes its cell lock over naming the dead holder.

Two server starts in all. Every process a command starts carries a mark in its environment
(``fault_helpers.MARK``), so none is missed whatever its session or process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.lock import CELL_LOCK, SWEEP_LOCK, FolderLock, read_holder
from launch import procs
from tests.conftest import REPO, run_launch
from tests.faults.fault_helpers import (
    MARK,
    describe,
    digest,
    kill_everything,
    marked,
    new_mark,
    wait_for,
)
from tests.launch.cancel_helpers import wait_short_done_long_running

pytestmark = pytest.mark.server

# One server, two cells: JPS 1 (2 jobs, seconds) then JPS 150 (300 jobs of 128 output tokens,
# about two minutes on 2 cores: still running when the second command and Ctrl-C come).
SWEEP = ["cluster=local", "policy=fcfs", "jps=[1,150]", "workload.n_jobs=null",
         "workload.duration_s=2", "workload.completion_tokens=128", "--no-report"]  # fmt: skip


def _start(args: list[str], mark: str, log: Path) -> subprocess.Popen:
    """``python -m launch ARGS`` as a shell starts a foreground job: its own process group
    (so a signal to the group is what a terminal's Ctrl-C sends), every descendant marked."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", MARK: mark}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip


def _manifest(cell_dir: Path) -> dict:
    return json.loads((cell_dir / "manifest.json").read_text())


def test_a_second_sweep_is_refused_and_ctrl_c_stops_the_first_cleanly(tmp_path):
    results = tmp_path / "results"
    args = ["sweep", *SWEEP, "experiment.name=faults_lock", f"results_dir={results}"]
    mark = new_mark()
    log = tmp_path / "first.log"
    first = _start(args, mark, log)
    try:
        sweep = wait_for(lambda: next(results.glob("*_faults_lock"), None), 120, "the folder")
        try:
            rows = wait_short_done_long_running(sweep, 600, lambda: first.poll() is None)
        except AssertionError:
            raise AssertionError(log.read_text()[-3000:]) from None
        short, long_ = (sweep / r["cell"] for r in rows)
        before = digest(short)

        # 1. the same command again, on the same folder, while the first measures
        t0 = time.monotonic()
        second = run_launch(*args, timeout=180)
        took = time.monotonic() - t0
        out = second.stdout + second.stderr
        assert second.returncode == 2, out
        (line,) = [x for x in second.stdout.splitlines() if x.startswith("error:")]
        assert f"is in use by pid {first.pid} on {procs.host()} since " in line, line
        assert "python -m launch sweep" in line and "--wait" in line, line
        assert second.stdout.strip().splitlines()[-1] == line, "refused in one line, last"
        assert took < 90, f"refused after {took:.0f} s"
        assert first.poll() is None, "the first sweep runs on"
        assert digest(short) == before, "the finished cell is untouched"
        assert not (long_ / "_attempts").exists(), "the running cell's files were not moved"
        holder = read_holder(sweep / SWEEP_LOCK)
        assert holder is not None and holder.pid == first.pid

        # 2. Ctrl-C in the first's terminal: SIGINT to its whole process group
        wait_for(lambda: (long_ / "progress.json").exists(), 5, "the cell to measure")
        t0 = time.monotonic()
        os.killpg(first.pid, signal.SIGINT)
        rc = first.wait(timeout=150)
        took = time.monotonic() - t0
        text = log.read_text()
        assert rc == 130, text[-3000:]
        assert "cancelled (SIGINT)" in text, text[-2000:]
        print(f"Ctrl-C: the launcher exited {took:.1f} s after SIGINT")
        wait_for(lambda: not marked(mark), 30, "every process of the sweep to end")
        man = _manifest(long_)
        assert man["status"] == "interrupted", man.get("error")
        assert man["error"].startswith("_Interrupted: received SIG"), man["error"]
        assert not (long_ / "progress.json").exists(), "progress.json removed"
        assert not (long_ / "DONE").exists()
        assert (long_ / "metrics.parquet").exists(), "its records are written"
        assert digest(short) == before
        assert read_holder(sweep / SWEEP_LOCK) is None, "the launcher released its lock"
        assert read_holder(long_ / CELL_LOCK) is None, "the cell released its lock"
        assert not procs.launcher_file(sweep).exists()

        st = run_launch("status", str(sweep), timeout=120)
        assert "2 cells: done 1, running 0, pending 0, failed 0, cancelled 1" in st.stdout, \
            st.stdout  # fmt: skip
        # the same command reruns exactly the interrupted cell (a dry run says so)
        dry = run_launch(*args, "--dry-run", timeout=120)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert dry.stdout.count("done (skipped)") == 1, dry.stdout
        assert dry.stdout.count("│ to run ") == 1 and long_.name in dry.stdout, dry.stdout
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        left = kill_everything(mark)
        assert not left, f"processes left by the sweep: {left}"


def test_a_cell_killed_outright_is_shown_failed_with_the_reason(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["cell", "cluster=local", "policy=fcfs", "jps=150", "workload.n_jobs=null",
            "workload.duration_s=2", "workload.completion_tokens=128",
            "experiment.name=faults_cellkill", f"sweep_dir={sweep}"]  # fmt: skip
    mark = new_mark()
    log = tmp_path / "cell.log"
    proc = _start(args, mark, log)
    try:
        prog = wait_for(lambda: next(sweep.rglob("progress.json"), None), 300,
                        "the cell measuring", every=1.0)  # fmt: skip
        cell_dir = prog.parent
        man = _manifest(cell_dir)
        assert man["status"] == "running"
        assert man["process"]["pid"] == proc.pid and man["process"]["host"] == procs.host()

        proc.send_signal(signal.SIGKILL)  # not a word: no handler runs, nothing is recorded
        proc.wait(timeout=10)
        st = run_launch("status", str(sweep), timeout=120)
        assert "1 cells: done 0, running 0, pending 0, failed 1, cancelled 0" in st.stdout, \
            st.stdout  # fmt: skip
        flat = " ".join(st.stdout.split())
        assert f"(pid {proc.pid} on {procs.host()}) is gone" in flat, st.stdout
        assert "killed without a word" in flat, st.stdout
        # its server goes with it (SIGTERM when its parent dies)
        try:
            wait_for(lambda: not marked(mark), 60, "the killed cell's server to end")
        except AssertionError:
            raise AssertionError(describe(marked(mark))) from None
        # the next writer takes the dead cell's lock over, naming it
        lock = FolderLock(cell_dir, CELL_LOCK).acquire()
        try:
            assert lock.took_over is not None and lock.took_over.pid == proc.pid
        finally:
            lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = kill_everything(mark)
        assert not left, f"processes left by the cell: {left}"
