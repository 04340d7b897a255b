"""How `python -m launch status` names a cell's state from its folder and the scheduler's."""

import json

from launch.status import cell_state


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
    for sched in (None, "COMPLETED", "FAILED", "CANCELLED by 0", "TIMEOUT"):
        state, detail = cell_state(d, sched)
        assert state == "failed" and "SIGUSR2" in detail, sched
    ok = tmp_path / "ok"
    ok.mkdir()
    assert cell_state(ok, "FAILED")[0] == "failed"  # the job died before any manifest
    (ok / "DONE").write_text("")
    assert cell_state(ok, "FAILED") == ("done", "")
