"""harness/atomic.py: a SIGKILL at any moment leaves each file whole under its name, and, where
the file system has unnamed files, no temporary of a file written for the first time.

A real writer process is killed at random moments while it writes, as a cell is by the fault
test of docs/reliability.md row B (tests/faults/test_kill_and_hang.py), whose CI run once found
the temporary of ``progress.json`` left behind. The same loop on the named-temporary path (what
every write did before) is the control: it must leave temporaries, so the check can fail."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import atomic
from tests.conftest import wait_for
from tests.faults.fault_helpers import half_written

REPO = Path(__file__).resolve().parents[2]

# Rewrites a 150 KB snapshot (as a policy's stats, five times a second in a cell), writes
# small records under new names (as a cell's records) and rewrites a small file whose brief
# absence says nothing (as progress.json), as fast as it can, until killed.
WRITER = """
import json, sys
from pathlib import Path
from harness import atomic
if sys.argv[2] == "named":
    atomic.O_TMPFILE = 0
d, i = Path(sys.argv[1]), 0
pad = "x" * 150_000
while True:
    atomic.replace(d / "snap.json", lambda f: f.write(json.dumps({"i": i, "pad": pad}).encode()))
    atomic.replace(d / f"rec-{i}.json", lambda f: f.write(json.dumps({"i": i}).encode()))
    atomic.replace(d / "progress.json", lambda f: f.write(json.dumps({"i": i}).encode()),
                   gap_ok=True)
    i += 1
"""


def kill_while_writing(folder: Path, how: str, rng: random.Random) -> None:
    folder.mkdir()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), how], cwd=REPO)
    try:
        wait_for(lambda: (folder / "rec-2.json").exists(), 30, "the writer to write", every=0.005)
        time.sleep(rng.uniform(0, 0.05))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def unreadable(folder: Path) -> list[str]:
    """Files under their own names that do not read (the fault tests' check, less the
    temporaries, which this test counts itself)."""
    return [bad for bad in half_written(folder) if not bad.startswith("temporary left")]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def unnamed_files_here(folder: Path) -> bool:
    fd = atomic._unnamed(folder, 0o600)
    if fd is None:
        return False
    os.close(fd)
    return True


def test_a_sigkill_mid_write_leaves_files_whole_and_no_temporary_of_a_new_file_or_progress(
    tmp_path,
):
    if not unnamed_files_here(tmp_path):
        pytest.skip("this file system has no unnamed files (O_TMPFILE): named temporaries only")
    rng = random.Random(42)
    kills, left = 40, {"unnamed": [], "named": []}
    for how in ("unnamed", "named"):
        for k in range(kills):
            d = tmp_path / f"{how}-{k}"
            kill_while_writing(d, how, rng)
            assert unreadable(d) == [], f"{how}, kill {k}: a file under its name is not whole"
            left[how] += [f"{k}: {t}" for t in temporaries(d)]
            # the next write of the snapshot takes over whatever its killed writer left
            atomic.replace(d / "snap.json", lambda f: f.write(b"{}"))
            assert ".snap.json.tmp" not in temporaries(d)
    print({how: f"{len(v)} temporaries left in {kills} kills" for how, v in left.items()})
    print("named:", *left["named"][:10], sep="\n  ")
    # a new file is named only once whole, and progress is unlinked and linked anew: a kill
    # never leaves a temporary of either
    assert not [t for t in left["unnamed"] if ".rec-" in t or ".progress" in t], left["unnamed"]
    # A rewrite can leave one only between two system calls with no I/O between them (about a
    # hundredth of this loop's time: not asserted, counted above); the next write takes it over.
    # the control: the named-temporary path left temporaries, which the checks above would see
    assert len(left["named"]) >= 3, left["named"]


def test_while_writing_nothing_is_visible_and_the_old_file_stands(tmp_path):
    if not unnamed_files_here(tmp_path):
        pytest.skip("this file system has no unnamed files (O_TMPFILE)")
    seen: list = []
    a = tmp_path / "a.json"

    def look(f) -> None:
        f.write(b"new")
        seen.append(sorted(os.listdir(tmp_path)))
        if a.exists():
            seen.append(a.read_text())

    atomic.replace(a, look)  # the first write: nothing is there yet
    atomic.replace(a, look)  # a rewrite: the old file stands, no temporary is visible
    assert seen == [[], ["a.json"], "new"], "a file being written is not visible, the old stands"
    assert os.listdir(tmp_path) == ["a.json"] and (tmp_path / "a.json").read_text() == "new"


@pytest.mark.parametrize("how", ["unnamed", "named"])
def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, how):
    if how == "named":
        monkeypatch.setattr(atomic, "O_TMPFILE", 0)
    (tmp_path / "a.json").write_text("old")
    stale = atomic.tmp_path(tmp_path / "a.json")
    stale.write_text("left by a killed writer")

    def fails(f):
        f.write(b"half")
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError, match="the writer broke"):
        atomic.replace(tmp_path / "a.json", fails)
    assert (tmp_path / "a.json").read_text() == "old"
    atomic.replace(tmp_path / "a.json", lambda f: f.write(b"new"))
    assert os.listdir(tmp_path) == ["a.json"], "the stale temporary was taken over"
    assert (tmp_path / "a.json").read_text() == "new"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == atomic.file_mode()
