"""A real sweep through submitit on the one-machine SLURM cluster (scripts/slurm-up.sh):
one job array for 4 cells, every cell running the real harness on the CPU engine, one cell
pre-empted (USR2, as SLURM signals before a time-out) and requeued, and ``status`` following."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from launch import status as st
from tests.conftest import run_launch

pytestmark = [pytest.mark.slurm, pytest.mark.server]


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        if os.environ.get("KVBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(
                "SLURM is required (KVBENCH_REQUIRE_SLURM=1) but sinfo fails: "
                "run scripts/slurm-up.sh"
            )
        pytest.skip("no SLURM cluster here: run scripts/slurm-up.sh")


def wait_cells(sweep: Path, pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, rows = st.collect(sweep)
        if pred(rows):
            return rows
        time.sleep(3)
    _, rows = st.collect(sweep)
    raise AssertionError(f"timed out waiting for {what}: {rows}")


def test_sweep_on_slurm_array_with_requeue(cluster, tmp_path):
    t0 = time.monotonic()
    r = run_launch("sweep", "cluster=ci", f"results_dir={tmp_path}", "jps=[1,2]",
                   "policy=[fcfs,continuum_ttl]", "workload.n_jobs=4",
                   "experiment.name=slurm_smoke", timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 4 cells as 1 job array(s)" in r.stdout
    assert time.monotonic() - t0 < 60, "sweep returns once submitted, it does not wait"
    (sweep,) = tmp_path.glob("*_slurm_smoke")
    meta = json.loads((sweep / "sweep.json").read_text())
    jobs = meta["submissions"][-1]["jobs"]
    assert len({j["job_id"].split("_")[0] for j in jobs}) == 1, "one sbatch for the whole array"
    assert len({j["job_id"] for j in jobs}) == 2, "one array task per server (JPS levels share it)"

    # Pre-empt the first cell once it runs: submitit checkpoints and requeues it.
    rows = wait_cells(
        sweep,
        lambda rs: any(r["state"] == "running" and r["detail"] for r in rs),
        600,
        "a running cell",
    )
    victim = next(r for r in rows if r["state"] == "running" and r["detail"])
    jid = next(j["job_id"] for j in jobs if j["cell"] == victim["cell"])
    # scancel may report "Job can not be altered now" while the requeue it caused is under
    # way (the signal was delivered): the outcome is checked below, not its exit status.
    # scancel retries "try again later" for as long as the requeue is in transition.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["scancel", "--signal=USR2", jid], capture_output=True, timeout=10)

    rows = wait_cells(
        sweep, lambda rs: all(r["state"] in ("done", "failed") for r in rs), 1500, "all cells"
    )
    assert [r["state"] for r in rows] == ["done"] * 4, rows
    vdir = sweep / victim["cell"]
    man = json.loads((vdir / "manifest.json").read_text())
    assert man["attempt"] == 2 and (vdir / "_attempts" / "1").is_dir(), "restarted cleanly"
    # the pre-empted attempt names the pre-emption, not the server exit it caused
    first = json.loads((vdir / "_attempts" / "1" / "manifest.json").read_text())
    assert first["status"] == "interrupted", first
    assert first["error"].startswith("_Interrupted: received SIGUSR2 (pre-empted or timed out"), \
        first["error"]  # fmt: skip
    assert man["scheduler"]["slurm_array_job_id"] == jid.split("_")[0]
    for rel in meta["matrix"]:
        assert (sweep / rel / "turns.parquet").exists()

    out = run_launch("status", str(sweep), timeout=120)
    assert out.returncode == 0 and "4 cells: done 4, running 0, pending 0, failed 0" in out.stdout
