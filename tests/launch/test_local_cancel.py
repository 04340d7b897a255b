"""`python -m launch cancel` of a local sweep from another terminal: the launcher (a
foreground ``python -m launch sweep``) stops its running cell cleanly and exits; finished
cells are untouched and nothing of the vLLM server is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from launch import procs
from tests.conftest import REPO, run_launch
from tests.launch.cancel_helpers import (
    LONG_JOBS,
    SWEEP_ARGS,
    files_of,
    manifest,
    procs_under,
    wait_for,
    wait_short_done_long_running,
)

pytestmark = pytest.mark.server


def test_cancel_a_local_sweep_from_another_terminal(tmp_path):
    log = tmp_path / "launcher.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "launch", "sweep", "cluster=local", *SWEEP_ARGS,
             "experiment.name=cancel_local", f"results_dir={tmp_path / 'results'}",
             "--no-report"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        sweep = wait_for(lambda: next((tmp_path / "results").glob("*_cancel_local"), None),
                         120, "the sweep folder")  # fmt: skip
        alive = lambda: launcher.poll() is None  # noqa: E731
        try:
            rows = wait_short_done_long_running(sweep, 600, alive)
        except AssertionError:
            raise AssertionError(log.read_text()[-3000:]) from None
        short, long_ = (sweep / r["cell"] for r in rows)
        before = files_of(short)
        rec = procs.read_launcher(sweep)
        assert rec is not None and rec.pid == launcher.pid and rec.alive()
        out = run_launch("status", str(sweep), timeout=120).stdout
        assert f"local launcher: pid {launcher.pid}" in out, out
        assert f"/{LONG_JOBS} in running cells" in out, out

        t0 = time.monotonic()
        c = run_launch("cancel", str(sweep), timeout=300)
        took = time.monotonic() - t0
        assert c.returncode == 0, c.stdout + c.stderr
        print(f"cancel took {took:.1f} s:\n{c.stdout}")
        assert f"stopping the local launcher (pid {launcher.pid}" in c.stdout
        assert f"1 cell(s) cancelled\n  {rows[1]['cell']}" in c.stdout
        # cancel returns once the launcher has exited
        assert launcher.wait(timeout=5) == 143
        assert took < 120, f"cancel took {took:.0f} s"  # a hang, not the grace periods (10+20 s)
        assert "cancelled (SIGTERM)" in log.read_text()
        assert not procs_under(sweep), procs_under(sweep)  # no vLLM server left
        assert not procs.launcher_file(sweep).exists(), "the launcher removed its record"
        assert files_of(short) == before, "the finished cell is untouched"
        assert not (long_ / "DONE").exists()
        man = manifest(long_)
        assert man["status"] == "interrupted" and "received SIGTERM" in man["error"], \
            man.get("error")  # fmt: skip
        out = run_launch("status", str(sweep), timeout=120).stdout
        assert "2 cells: done 1, running 0, pending 0, failed 0, cancelled 1" in out, out
        c = run_launch("cancel", str(sweep), timeout=120)
        assert c.returncode == 0 and "nothing to cancel" in c.stdout, c.stdout
        # the same command would rerun only the cancelled cell
        r = run_launch("sweep", "cluster=local", *SWEEP_ARGS, "experiment.name=cancel_local",
                       f"results_dir={tmp_path / 'results'}", "--dry-run", timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("done (skipped)") == 1 and r.stdout.count("│ to run ") == 1, r.stdout
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
