"""The folder lock (harness/lock.py): one writer per sweep or cell folder, the holder named,
a dead holder's lock taken over, waiting for a live one; and the rule that a complete cell
(DONE) is never moved or rewritten but by an explicit rerun (harness/cell.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import cell
from harness.lock import CELL_LOCK, SWEEP_LOCK, FolderLock, LockHeld, read_holder
from tests.conftest import REPO

HOLDER = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from harness.lock import FolderLock
    folder, name, hold_s, child = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    lock = FolderLock(Path(folder), name, command="holder-for-test").acquire()
    if child == "child":  # a long-lived child: it must not inherit the lock
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    print("held", flush=True)
    time.sleep(hold_s)
    lock.release()
""")


def _hold(folder: Path, name: str = SWEEP_LOCK, hold_s: float = 60,
          child: bool = False) -> subprocess.Popen:  # fmt: skip
    """A process that holds the lock of ``folder`` for ``hold_s`` seconds (then releases)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name, str(hold_s),
                          "child" if child else "-"],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait()


def test_a_second_holder_is_refused_with_who_holds_it(tmp_path):
    holder = _hold(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockHeld) as err:
            FolderLock(tmp_path, SWEEP_LOCK, "sweep folder", hint="add --wait").acquire()
        assert time.monotonic() - t0 < 2, "refused at once, not after a wait"
        msg = str(err.value)
        assert "\n" not in msg
        assert f"sweep folder {tmp_path} is in use by pid {holder.pid} on {socket.gethostname()}"\
            in msg, msg  # fmt: skip
        assert "since 20" in msg and "holder-for-test" in msg and msg.endswith("; add --wait")
        assert err.value.holder is not None and err.value.holder.pid == holder.pid
        # what the file says, for status and for people
        rec = json.loads((tmp_path / SWEEP_LOCK).read_text())
        assert {"host", "pid", "since", "command", "started_unix"} <= set(rec)
    finally:
        _stop(holder)


def test_a_lock_left_by_a_dead_process_is_taken_over_naming_it(tmp_path, caplog):
    holder = _hold(tmp_path, child=True)  # its child must not keep the lock alive
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(tmp_path / SWEEP_LOCK).pid == holder.pid  # the file still names it
    lock = FolderLock(tmp_path, SWEEP_LOCK, "sweep folder").acquire()
    try:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        line = lock.takeover_line()
        assert f"left by pid {holder.pid}" in line and "died without releasing it" in line
        assert "\n" not in line
        assert read_holder(tmp_path / SWEEP_LOCK).pid == os.getpid()
    finally:
        lock.release()
    assert read_holder(tmp_path / SWEEP_LOCK) is None, "a clean release empties the file"
    again = FolderLock(tmp_path, SWEEP_LOCK).acquire()
    assert again.took_over is None, "a lock released cleanly is not 'taken over'"
    again.release()


def test_wait_waits_for_the_holder_then_takes_the_lock(tmp_path):
    holder = _hold(tmp_path, hold_s=2)
    try:
        seen = []
        t0 = time.monotonic()
        lock = FolderLock(tmp_path, SWEEP_LOCK).acquire(wait=True, poll_s=0.1, on_wait=seen.append)
        waited = time.monotonic() - t0
        assert 0.5 < waited < 15, waited
        assert len(seen) == 1 and seen[0] is not None and seen[0].pid == holder.pid
        assert lock.took_over is None  # released cleanly by its holder
        assert read_holder(tmp_path / SWEEP_LOCK).pid == os.getpid()
        lock.release()
        with pytest.raises(LockHeld):  # and a wait with a deadline gives up
            h2 = _hold(tmp_path)
            try:
                FolderLock(tmp_path, SWEEP_LOCK).acquire(wait=True, timeout_s=0.5, poll_s=0.1)
            finally:
                _stop(h2)
    finally:
        _stop(holder)


def test_clear_is_the_last_write_to_the_lock_file(tmp_path):
    """A cell clears its lock before DONE; releasing it afterwards leaves the file as it was."""
    lock = FolderLock(tmp_path, CELL_LOCK).acquire()
    lock.clear()
    f = tmp_path / CELL_LOCK
    before = (f.stat().st_mtime_ns, f.read_bytes())
    time.sleep(0.02)
    lock.release()
    assert (f.stat().st_mtime_ns, f.read_bytes()) == before == (before[0], b"")


# --- a complete cell is never moved or rewritten ----------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _done_cell(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "turns.parquet").write_bytes(b"PAR1 turns")
    (d / "manifest.json").write_text(json.dumps({"status": "ok"}))
    (d / "client.log").write_text("log\n")
    (d / "DONE").write_text("2026-01-01T00:00:00+00:00\n")
    return d


def test_archive_previous_refuses_a_complete_cell_and_leaves_it_byte_identical(tmp_path):
    d = _done_cell(tmp_path / "jps=1")
    before = _snapshot(d)
    with pytest.raises(cell.CellComplete, match="complete .DONE.*--rerun"):
        cell.archive_previous(d)
    assert _snapshot(d) == before and not (d / "_attempts").exists()


def test_run_cells_skips_a_complete_cell_without_touching_it(tmp_path):
    d = _done_cell(tmp_path / "jps=1")
    before = _snapshot(d)
    assert cell.run_cells([None], [d]) == [None]  # no config needed: nothing runs
    assert _snapshot(d) == before
    assert sorted(p.name for p in d.iterdir()) == ["DONE", "client.log", "manifest.json",
                                                   "turns.parquet"], "not even a lock file"


def test_an_explicit_rerun_moves_the_complete_cell_to_its_attempts(tmp_path):
    d = _done_cell(tmp_path / "jps=1")
    before = _snapshot(d)
    assert cell.archive_previous(d, rerun=True) == 2
    assert not (d / "DONE").exists()
    moved = {k.removeprefix("_attempts/1/"): v for k, v in _snapshot(d).items()}
    assert {k: v[0] for k, v in moved.items()} == {k: v[0] for k, v in before.items()}


def test_a_cell_held_by_another_process_is_refused_before_anything_is_touched(tmp_path):
    d = tmp_path / "jps=1"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"status": "running"}))
    (d / "progress.json").write_text("{}")
    holder = _hold(d, CELL_LOCK)
    try:
        before = _snapshot(d)
        with pytest.raises(LockHeld, match=f"cell folder {d} is in use by pid {holder.pid}"):
            cell.run_cells([None], [d])
        assert _snapshot(d) == before and not (d / "_attempts").exists()
    finally:
        _stop(holder)
