"""`python -m launch cancel` of a real SLURM sweep on the one-machine cluster
(scripts/slurm-up.sh): one server group of two cells, the first done, the second running with
progress. Cancel stops only the second (its job leaves the queue, its vLLM server is gone, its
manifest says why, status calls it cancelled), the first is untouched, and the same sweep
command resubmits only the cancelled cell; that resubmission, held in the queue, shows
squeue's reason and is cancelled while queued."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from launch import status as st
from tests.conftest import run_launch
from tests.launch.cancel_helpers import (
    LONG_JOBS,
    SWEEP_ARGS,
    files_of,
    manifest,
    procs_under,
    wait_for,
    wait_short_done_long_running,
)
from tests.launch.test_slurm_sweep import cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slurm, pytest.mark.server]


def queued(job_ids: list[str]) -> list[str]:
    """squeue's lines for these jobs that are still queued or running."""
    r = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                       capture_output=True, text=True)  # fmt: skip
    return [x for x in r.stdout.splitlines() if st.is_active(x.split("|")[1])]


def test_cancel_a_running_slurm_sweep_keeps_done_cells_and_resumes(cluster, tmp_path):  # noqa: F811
    t_start = time.monotonic()
    args = ("sweep", "cluster=ci", *SWEEP_ARGS, "experiment.name=cancel_test",
            f"results_dir={tmp_path}")  # fmt: skip
    r = run_launch(*args, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 2 cells as 1 job array(s)" in r.stdout
    (sweep,) = tmp_path.glob("*_cancel_test")
    try:
        _check(sweep, args)
    finally:  # nothing of this test left in the queue, whatever happened
        ids = {j["job_id"] for s in json.loads((sweep / "sweep.json").read_text())["submissions"]
               for j in s["jobs"]}  # fmt: skip
        subprocess.run(["scancel", *ids], capture_output=True)
    print(f"test took {time.monotonic() - t_start:.0f} s")


def _check(sweep, args) -> None:
    rows = wait_short_done_long_running(sweep, 600, alive=lambda: True)
    short, long_ = (sweep / r["cell"] for r in rows)
    before = files_of(short)
    assert "DONE" in before and "turns.parquet" in before
    (jid,) = {j["job_id"] for j in json.loads((sweep / "sweep.json").read_text())
              ["submissions"][-1]["jobs"]}  # fmt: skip

    out = run_launch("status", str(sweep), timeout=120).stdout
    assert re.search(rf"running +│ RUNNING +│ jobs \d+/{LONG_JOBS}", out), out
    assert re.search(rf"2 cells: done 1, running 1, pending 0, failed 0, cancelled 0; "
                     rf"jobs \d+/{LONG_JOBS} in running cells", out), out  # fmt: skip

    t0 = time.monotonic()
    c = run_launch("cancel", str(sweep), timeout=300)
    took = time.monotonic() - t0
    assert c.returncode == 0, c.stdout + c.stderr
    assert f"scancel {jid} (RUNNING): {rows[1]['cell']}" in c.stdout, c.stdout
    assert "cancelled 1 SLURM job(s), 1 cell(s); none left queued" in c.stdout
    print(f"cancel took {took:.1f} s:\n{c.stdout}")
    assert not queued([jid]), "the job left the queue"
    assert not procs_under(sweep), procs_under(sweep)  # no vLLM server left
    assert files_of(short) == before, "the finished cell is untouched"
    assert not (long_ / "DONE").exists()
    man = manifest(long_)
    assert man["status"] == "interrupted" and "received SIGTERM" in man["error"], man.get("error")
    out = run_launch("status", str(sweep), timeout=120).stdout
    assert "2 cells: done 1, running 0, pending 0, failed 0, cancelled 1" in out, out
    assert re.search(r"cancelled +│ CANCELLED", out), out

    # The same command resubmits only the cancelled cell; held, it stays queued with a reason.
    r = run_launch(*args, "+cluster.slurm_extra.hold=true", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 1 cells as 1 job array(s)" in r.stdout, r.stdout
    (jid2,) = {j["job_id"] for j in json.loads((sweep / "sweep.json").read_text())
               ["submissions"][-1]["jobs"]}  # fmt: skip
    def held() -> str | None:
        o = run_launch("status", str(sweep), timeout=120).stdout
        return o if "PENDING (JobHeldUser)" in o else None

    out = wait_for(held, 60, "the held job's reason in status")
    assert "2 cells: done 1, running 0, pending 1, failed 0, cancelled 0" in out, out
    c = run_launch("cancel", str(sweep), timeout=300)
    assert c.returncode == 0, c.stdout + c.stderr
    assert f"scancel {jid2} (PENDING (JobHeldUser))" in c.stdout, c.stdout
    assert not queued([jid2])
    assert files_of(short) == before
    out = run_launch("status", str(sweep), timeout=120).stdout
    assert "2 cells: done 1, running 0, pending 0, failed 0, cancelled 1" in out, out
    c = run_launch("cancel", str(sweep), timeout=120)
    assert c.returncode == 0 and "nothing to cancel" in c.stdout, c.stdout
