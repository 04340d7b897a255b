"""How `python -m launch status` names a cell's state from its folder and the scheduler's."""

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.cellkey import CellKey
from launch import cli, procs
from launch import status as st
from launch.status import cell_state, is_active, parse_squeue, squeue_states


def _failed_attempt(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps(
        {"status": "failed", "error": "_Interrupted: received SIGUSR2\nmore"}))
    return d


def test_a_failed_attempt_that_slurm_requeued_is_pending_not_failed(tmp_path):
    """Seen on a fresh clone: right after USR2 the manifest says failed while the requeued
    task waits; reporting it failed ended the SLURM test's wait one attempt too early."""
    d = _failed_attempt(tmp_path / "c")
    assert cell_state(d, "PENDING") == ("pending", "requeued after: _Interrupted: received SIGUSR2")
    assert cell_state(d, "REQUEUED")[0] == "pending"
    assert cell_state(d, "RUNNING")[0] == "running"


def test_a_failed_attempt_with_no_job_left_is_failed(tmp_path):
    d = _failed_attempt(tmp_path / "c")
    for sched in (None, "COMPLETED", "FAILED", "TIMEOUT", "ENDED (local)"):
        state, detail = cell_state(d, sched)
        assert state == "failed" and "SIGUSR2" in detail, sched
    # scancel (by `launch cancel` or by hand), or a cancel recorded by `launch cancel`
    for sched, recorded in (("CANCELLED by 0", False), (None, True), ("COMPLETED", True)):
        state, detail = cell_state(d, sched, cancelled=recorded)
        assert state == "cancelled" and "SIGUSR2" in detail, sched
    # recorded, but its job is still queued (scancel failed): not cancelled
    assert cell_state(d, "RUNNING", cancelled=True)[0] == "running"
    ok = tmp_path / "ok"
    ok.mkdir()
    assert cell_state(ok, "FAILED")[0] == "failed"  # the job died before any manifest
    (ok / "DONE").write_text("")
    assert cell_state(ok, "FAILED") == ("done", "")


# --- SLURM's view: squeue's state and reason ---------------------------------------------------

SQUEUE = """\
41_0|RUNNING|None
41_1|PENDING|Priority
41_2|PENDING|Resources
42|PENDING|QOSMaxJobsPerUserLimit
43_[3-5,7%2]|PENDING|JobArrayTaskLimit
garbage line
44|COMPLETING|None
"""


def test_squeue_lines_give_state_and_reason():
    got = parse_squeue(SQUEUE)
    assert got["41_0"] == "RUNNING"
    assert got["41_1"] == "PENDING (Priority)"
    assert got["41_2"] == "PENDING (Resources)"
    assert got["42"] == "PENDING (QOSMaxJobsPerUserLimit)"
    assert got["44"] == "COMPLETING"
    # pending tasks of an array collapse into one line unless -r: expanded all the same
    assert [k for k in got if k.startswith("43_")] == ["43_3", "43_4", "43_5", "43_7"]
    assert got["43_7"] == "PENDING (JobArrayTaskLimit)"
    assert all(is_active(v) for v in got.values())


def _fake_bin(tmp_path, monkeypatch, name: str, script: str) -> Path:
    b = tmp_path / "bin"
    b.mkdir(exist_ok=True)
    f = b / name
    f.write_text("#!/bin/sh\n" + script)
    f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{b}:{os.environ['PATH']}")
    return b


def test_one_squeue_call_for_all_jobs_and_none_listed_is_empty(tmp_path, monkeypatch):
    b = _fake_bin(tmp_path, monkeypatch, "squeue",
                  f'echo "$@" >> {tmp_path}/calls\necho "7_1|PENDING|Priority"\n')  # fmt: skip
    assert squeue_states(["7_1", "7_0", "7_1"]) == {"7_1": "PENDING (Priority)"}
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert call == "-h -r -j 7_0,7_1 -o %i|%T|%r"
    # every id finished: squeue says "Invalid job id specified" and exits 1
    (b / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error' >&2\nexit 1\n")
    assert squeue_states(["7_0"]) == {}
    assert squeue_states([]) == {}


# --- rows and totals of a sweep folder ----------------------------------------------------------

JPS = (1, 2, 4, 8, 16)


def _rel(jps) -> str:
    return CellKey(gpu="cpu", dram=8, policy="fcfs", sched="fcfs", jps=jps).rel_dir


def _sweep(tmp_path: Path, jobs: dict[float, str], executor: str = "slurm", **sub) -> Path:
    s = tmp_path / "sweep"
    s.mkdir()
    meta = {"matrix": [_rel(j) for j in JPS], "cells": {},
            "submissions": [{"time": 1000.0, "executor": executor, **sub,
                             "jobs": [{"cell": _rel(j), "job_id": jid}
                                      for j, jid in jobs.items()]}]}  # fmt: skip
    (s / "sweep.json").write_text(json.dumps(meta))
    return s


def _cell(s: Path, jps, *, done=False, progress=None, manifest=None) -> Path:
    d = s / _rel(jps)
    d.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (d / "manifest.json").write_text(json.dumps(manifest))
    if progress is not None:
        (d / "progress.json").write_text(json.dumps(
            {"jobs_done": progress[0], "jobs_total": progress[1], "state": "running"}))
    if done:
        (d / "DONE").write_text("")
    return d


def _slurm(monkeypatch, sacct: dict[str, str], squeue: dict[str, str]) -> None:
    monkeypatch.setattr(st, "sacct_states", lambda ids: {i: sacct[i] for i in ids})
    monkeypatch.setattr(st, "squeue_states", lambda ids: {i: squeue[i] for i in ids if i in squeue})


def test_rows_and_totals_with_squeue_reasons_and_sacct_fallback(tmp_path, monkeypatch):
    s = _sweep(tmp_path, {1: "5_0", 2: "5_0", 4: "5_1", 8: "5_2", 16: "5_3"})
    _cell(s, 1, done=True, manifest={"status": "ok"})
    _cell(s, 2, progress=(3, 6), manifest={"status": "running", "workload": {"n_jobs": 6}})
    _cell(s, 8, manifest={"status": "failed", "error": "_Interrupted: received SIGTERM"})
    # 5_3: finished, no longer in squeue: sacct's state is used
    _slurm(monkeypatch, {"5_0": "RUNNING", "5_1": "PENDING", "5_2": "CANCELLED by 0",
                         "5_3": "FAILED"},
           {"5_0": "RUNNING", "5_1": "PENDING (QOSMaxJobsPerUserLimit)"})  # fmt: skip
    _, rows = st.collect(s)
    by = {CellKey.from_rel(r["cell"]).jps: r for r in rows}
    assert {k: (r["state"], r["scheduler"]) for k, r in by.items()} == {
        1: ("done", "RUNNING"),
        2: ("running", "RUNNING"),
        4: ("pending", "PENDING (QOSMaxJobsPerUserLimit)"),
        8: ("cancelled", "CANCELLED by 0"),
        16: ("failed", "FAILED"),
    }
    assert by[2]["detail"] == "jobs 3/6" and (by[2]["jobs_done"], by[2]["jobs_total"]) == (3, 6)
    assert by[4]["jobs_done"] is None and by[4]["job_id"] == "5_1"
    assert "received SIGTERM" in by[8]["detail"] and "no job left" in by[8]["detail"]
    t = st.totals(rows)
    assert (t["done"], t["running"], t["pending"], t["failed"], t["cancelled"]) == (1, 1, 1, 1, 1)
    assert st.totals_line(t) == ("5 cells: done 1, running 1, pending 1, failed 1, cancelled 1; "
                                 "jobs 3/6 in running cells")  # fmt: skip


def test_a_cell_waiting_for_its_servers_earlier_cell_is_pending(tmp_path, monkeypatch):
    """The JPS levels of one server run one after another in one job: while the first runs,
    the next one's job is RUNNING, but the cell is not (its manifest is written, no workload)."""
    s = _sweep(tmp_path, {j: "9_0" for j in JPS})
    _cell(s, 1, done=True)
    _cell(s, 2, progress=(0, 40), manifest={"status": "running", "workload": {"n_jobs": 40}})
    for j in JPS[2:]:
        _cell(s, j, manifest={"status": "running"})
    _slurm(monkeypatch, {"9_0": "RUNNING"}, {"9_0": "RUNNING"})
    _, rows = st.collect(s)
    assert [r["state"] for r in rows] == ["done", "running", "pending", "pending", "pending"]
    assert rows[2]["detail"] == f"after {_rel(2)} on its server"
    assert st.totals_line(st.totals(rows)).endswith("; jobs 0/40 in running cells")


def test_first_cell_of_a_job_starting_its_server(tmp_path, monkeypatch):
    s = _sweep(tmp_path, {j: "9_0" for j in JPS})
    for j in JPS:
        _cell(s, j, manifest={"status": "running"})
    _slurm(monkeypatch, {"9_0": "RUNNING"}, {"9_0": "RUNNING"})
    _, rows = st.collect(s)
    assert [r["state"] for r in rows] == ["running"] + ["pending"] * 4
    # no detail until it measures (tests/launch/test_slurm_sweep.py waits for one)
    assert rows[0]["detail"] == ""
    assert st.totals_line(st.totals(rows)) == (
        "5 cells: done 0, running 1, pending 4, failed 0, cancelled 0; jobs 0/0 in running cells"
    )


def test_a_resubmitted_cell_is_not_called_requeued(tmp_path):
    d = _failed_attempt(tmp_path / "c")
    m = json.loads((d / "manifest.json").read_text())
    m["times"] = {"start_unix": 500.0}
    (d / "manifest.json").write_text(json.dumps(m))
    assert cell_state(d, "PENDING (JobHeldUser)", submitted=1000.0) == (
        "pending", "earlier attempt: _Interrupted: received SIGUSR2")  # fmt: skip
    assert cell_state(d, "PENDING", submitted=400.0)[1].startswith("requeued after:")


def test_cancel_record_names_cells_until_they_are_resubmitted(tmp_path, monkeypatch):
    s = _sweep(tmp_path, {1: "3_0", 2: "3_0"})
    _cell(s, 1, done=True)
    _cell(s, 2, progress=(1, 9), manifest={"status": "running"})  # killed before unwinding
    st.record_cancel(s, 2000.0, "slurm", [{"cell": _rel(2), "job_id": "3_0"}])
    _slurm(monkeypatch, {"3_0": "COMPLETED"}, {})
    _, rows = st.collect(s)
    assert [r["state"] for r in rows[:2]] == ["done", "cancelled"]
    # run again: a new submission of that cell supersedes the record
    meta = json.loads((s / "sweep.json").read_text())
    meta["submissions"].append({"time": 3000.0, "executor": "slurm",
                                "jobs": [{"cell": _rel(2), "job_id": "4"}]})  # fmt: skip
    (s / "sweep.json").write_text(json.dumps(meta))
    (s / _rel(2) / "progress.json").unlink()
    _slurm(monkeypatch, {"3_0": "COMPLETED", "4": "PENDING"}, {"4": "PENDING (Priority)"})
    _, rows = st.collect(s)
    assert (rows[1]["state"], rows[1]["scheduler"]) == ("pending", "PENDING (Priority)")


def test_local_cells_follow_their_controller_process(tmp_path):
    """Locally the job id is the submitit controller's pid: a cell whose controller is gone is
    not running, even with a progress.json left behind by a killed cell."""
    gone = _dead_pid()
    s = _sweep(tmp_path, {1: str(gone), 2: str(gone)}, executor="local", host=procs.host())
    _cell(s, 1, done=True)
    _cell(s, 2, progress=(2, 6), manifest={"status": "running"})
    _, rows = st.collect(s)
    assert [(r["state"], r["scheduler"]) for r in rows[:2]] == [
        ("done", "ENDED (local)"), ("failed", "ENDED (local)")]  # fmt: skip
    st.record_cancel(s, 2000.0, "local", [{"cell": _rel(2), "job_id": str(gone)}])
    assert st.collect(s)[1][1]["state"] == "cancelled"


def test_local_cell_of_a_live_controller_is_running(tmp_path):
    s = _sweep(tmp_path, {}, executor="local", host=procs.host())
    folder = str(s.resolve() / "_submitit")
    # a stand-in with the controller's command line (python -m submitit.local._local <folder>)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "submitit.local._local", folder])  # fmt: skip
    try:
        meta = json.loads((s / "sweep.json").read_text())
        meta["submissions"][0]["jobs"] = [{"cell": _rel(1), "job_id": str(fake.pid)}]
        (s / "sweep.json").write_text(json.dumps(meta))
        _cell(s, 1, progress=(1, 6), manifest={"status": "running"})
        _, rows = st.collect(s)
        assert (rows[0]["state"], rows[0]["scheduler"]) == (
            "running", f"RUNNING (local pid {fake.pid})")  # fmt: skip
        # recorded on another host: not checkable here, so the folder alone decides
        meta["submissions"][0]["host"] = "elsewhere"
        (s / "sweep.json").write_text(json.dumps(meta))
        _, rows = st.collect(s)
        assert (rows[0]["state"], rows[0]["scheduler"]) == ("running", "")
    finally:
        fake.kill()
        fake.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_status_of_a_folder_that_is_not_a_sweep_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path / "nope")]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error:") and "not a sweep folder" in out and len(out.splitlines()) == 1


def test_a_running_cell_shows_its_time_and_client_workers(tmp_path):
    """progress.json as harness.drive writes it (records.Progress) reads back whole, and the
    status detail says how far the cell is, for how long and on how many client processes."""
    from harness import records

    d = tmp_path / "cell"
    d.mkdir()
    records.write_progress(records.Progress(7, 150, 42.4, 4), d)
    got = records.read_progress(d)
    assert got == records.Progress(7, 150, 42.4, 4)
    assert st.cell_state(d, None) == ("running", "jobs 7/150, 42 s, 4 client workers")
    records.write_progress(records.Progress(1, 2, 0.4, 1), d)
    assert st.cell_state(d, None)[1] == "jobs 1/2, 0 s, 1 client worker"
    (d / records.PROGRESS).write_text("{not json")
    assert records.read_progress(d) is None
