"""`python -m launch cancel` without a server: what it signals and what it refuses to.

The real thing (a SLURM job and a local sweep with a vLLM server) is tests/launch/
test_slurm_cancel.py; here stand-in processes and stand-in SLURM commands check the rules:
only the recorded launcher, only if it is alive, on this host, and a ``launch`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.cellkey import CellKey
from launch import cli, procs
from launch import status as st
from launch.local import _StopRequest

REL1 = CellKey(gpu="cpu", dram=8, policy="fcfs", sched="fcfs", jps=1).rel_dir
REL2 = CellKey(gpu="cpu", dram=8, policy="fcfs", sched="fcfs", jps=2).rel_dir


def _sweep(tmp_path: Path, submissions: list[dict] | None = None) -> Path:
    s = tmp_path / "sweep"
    (s / "_submitit").mkdir(parents=True)
    meta = {"matrix": [REL1, REL2], "cells": {}, "submissions": submissions or []}
    (s / "sweep.json").write_text(json.dumps(meta))
    return s


def _run(path: Path, capsys) -> tuple[int, str]:
    rc = cli.main(["cancel", str(path)])
    return rc, capsys.readouterr().out


def test_a_folder_that_is_not_a_sweep_is_a_one_line_error(tmp_path, capsys):
    rc, out = _run(tmp_path / "missing", capsys)
    assert rc == 2
    assert out.strip().startswith("error:") and len(out.strip().splitlines()) == 1, out


def test_nothing_active_says_so(tmp_path, capsys):
    s = _sweep(tmp_path)
    rc, out = _run(s, capsys)
    assert rc == 0 and "nothing to cancel" in out


FAKE_LAUNCHER = """
import json, os, signal, socket, sys, time
import psutil
sweep = sys.argv[2]
me = psutil.Process()
rec = {{"pid": me.pid, "host": socket.gethostname(), "started_unix": me.create_time(),
        "argv": sys.argv}}
os.makedirs(os.path.join(sweep, "_submitit"), exist_ok=True)
with open(os.path.join(sweep, "_submitit", "launcher.json"), "w") as f:
    json.dump(rec, f)
def stop(signum, frame):
    open(os.path.join(sweep, "stopped"), "w").write(signal.Signals(signum).name)
    time.sleep({linger})  # as the real launcher waits for its cell to stop its server
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(120)
"""


def _fake_launcher(tmp_path: Path, sweep: Path, linger: float = 1.0) -> subprocess.Popen:
    """A process whose command line is ``python -m launch sweep <sweep>`` (a stand-in package
    named ``launch``) that records itself as the real launcher does."""
    pkg = tmp_path / "fake" / "launch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent(FAKE_LAUNCHER.format(linger=linger)))
    p = subprocess.Popen([sys.executable, "-m", "launch", "sweep", str(sweep)],
                         cwd=tmp_path / "fake", stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_cancel_stops_the_recorded_launcher_and_waits_for_it(tmp_path, capsys):
    s = _sweep(tmp_path)
    p = _fake_launcher(tmp_path, s, linger=2.0)
    try:
        rec = procs.read_launcher(s)
        assert rec is not None and rec.pid == p.pid and rec.alive()
        t0 = time.monotonic()
        rc, out = _run(s, capsys)
        assert rc == 0, out
        assert time.monotonic() - t0 >= 1.5, "cancel waits until the launcher has exited"
        assert p.poll() == 143 and (s / "stopped").read_text() == "SIGTERM"
        assert f"stopping the local launcher (pid {p.pid}" in out
    finally:
        p.kill()
        p.wait()


def test_cancel_leaves_alone_a_pid_that_is_not_the_launcher(tmp_path, capsys):
    """A record whose pid is now another program (or a dead process, or the launcher of a
    record from another machine) is not signalled."""
    s = _sweep(tmp_path)
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(other.pid).create_time()
        rec = {"pid": other.pid, "host": procs.host(), "started_unix": started, "argv": []}
        procs.launcher_file(s).write_text(json.dumps(rec))
        rc, out = _run(s, capsys)
        assert rc == 0 and "nothing to cancel" in out and other.poll() is None
        # the same pid reused by a launch process started later than the record says
        assert not procs.Launcher(other.pid, procs.host(), started - 50, [], s).alive()
        rec["host"] = "another-machine"
        procs.launcher_file(s).write_text(json.dumps(rec))
        rc, out = _run(s, capsys)
        assert rc == 1 and "runs on another-machine" in out and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_launch_cmdlines():
    assert procs.is_launch_cmdline(["/x/python", "-m", "launch", "sweep", "a=b"])
    assert procs.is_launch_cmdline(["/x/python", "/repo/launch/__main__.py", "sweep"])
    assert not procs.is_launch_cmdline(["/x/python", "-m", "launcher"])
    assert not procs.is_launch_cmdline(["sleep", "60"])
    folder = Path("/r/s").resolve()
    ctl = ["/x/python", "-m", "submitit.local._local", f"{folder}/_submitit"]
    assert procs.is_controller_cmdline(ctl, folder)
    assert not procs.is_controller_cmdline(ctl, Path("/r/other"))


def test_slurm_cancel_scancels_only_the_sweeps_active_jobs(tmp_path, capsys, monkeypatch):
    subs = [{"time": 1.0, "executor": "slurm", "jobs": [
        {"cell": REL1, "job_id": "8_0"}, {"cell": REL2, "job_id": "8_1"}]}]  # fmt: skip
    s = _sweep(tmp_path, subs)
    (s / REL1).mkdir(parents=True)
    (s / REL1 / "DONE").write_text("")
    calls = tmp_path / "scancel.calls"
    b = tmp_path / "bin"
    b.mkdir()
    (b / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (b / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{b}:{os.environ['PATH']}")

    def sacct(ids):
        cancelled = calls.exists()
        return {i: ("CANCELLED by 0" if cancelled and i == "8_1" else "RUNNING") for i in ids}

    monkeypatch.setattr(st, "sacct_states", sacct)
    monkeypatch.setattr(st, "squeue_states", lambda ids: {})
    rc, out = _run(s, capsys)
    assert rc == 0, out
    # 8_0 still runs but its cell is done: only the job of the unfinished cell is cancelled
    assert calls.read_text().split() == ["8_1"]
    assert "scancel 8_1 (RUNNING)" in out and "cancelled 1 SLURM job(s), 1 cell(s)" in out
    assert "2 cells: done 1, running 0, pending 0, failed 0, cancelled 1" in out
    (rec,) = st.read_cancels(s)
    assert rec["jobs"] == [{"cell": REL2, "job_id": "8_1"}]


def test_sigterm_in_the_launcher_is_deferred_while_a_job_is_submitted():
    """The launcher never loses track of a job it is starting: SIGTERM during the submission
    is raised (as KeyboardInterrupt, like Ctrl-C) once the job is recorded."""
    stop = _StopRequest()
    before = signal.getsignal(signal.SIGTERM)
    with stop.installed():
        steps = []
        with pytest.raises(KeyboardInterrupt), stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            steps.append("submitted and recorded")
        assert steps == ["submitted and recorded"] and stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM while stopping: ignored
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_launcher_record_lives_as_long_as_its_launcher(tmp_path):
    """The record is removed when the launcher exits, and only by its own launcher."""
    s = _sweep(tmp_path)
    with procs.launcher_record(s):
        rec = procs.read_launcher(s)
        assert rec is not None and rec.pid == os.getpid() and rec.here
    assert not procs.launcher_file(s).exists()
