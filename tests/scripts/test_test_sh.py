"""The README's test command (scripts/test.sh) with no arguments runs two tiers side by side;
its exit status must be the tiers' verdict. A stop's CI once failed with both tiers green
because the EXIT trap's `kill` of the already-ended tier failed under `set -e`.

`--tiers ARGS` runs the same two-tier logic on the files given, here small throwaway test
files (marked like the real ones) so each case takes a few seconds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PASS_FAST = "def test_fast_ok():\n    assert 1 + 1 == 2\n"
FAIL_FAST = "def test_fast_broken():\n    assert 1 + 1 == 3\n"
PASS_SLOW = (
    "import pytest\npytestmark = pytest.mark.server\n\n"
    "def test_slow_ok():\n    assert True\n"
)
FAIL_SLOW = (
    "import pytest\npytestmark = pytest.mark.server\n\n"
    "def test_slow_broken():\n    assert False\n"
)


def _run(tmp_path: Path, fast: str, slow: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_fast_tier.py").write_text(fast)
    (tmp_path / "test_slow_tier.py").write_text(slow)
    env = {**os.environ, "KVBENCH_SKIP_SLURM": "1"}
    return subprocess.run(
        ["bash", "scripts/test.sh", "--tiers", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("fast", "slow", "rc"),
    [
        (PASS_FAST, PASS_SLOW, 0),
        (FAIL_FAST, PASS_SLOW, 1),
        (PASS_FAST, FAIL_SLOW, 1),
    ],
    ids=["both-pass", "fast-tier-fails", "server-tier-fails"],
)
def test_the_exit_status_is_the_tiers_verdict(tmp_path, fast, slow, rc):
    done = _run(tmp_path, fast, slow)
    out = done.stdout + done.stderr
    assert done.returncode == rc, out[-3000:]
    # Both tiers ran and the background tier's log is shown after the foreground one.
    assert "the tier without a server" in out
    # Each tier selected exactly its own file's test (the other is deselected by marker).
    assert out.count("1 deselected") == 2, out[-3000:]
    for name, src in (("test_fast_broken", fast), ("test_slow_broken", slow)):
        assert ("FAILED" in out and name in out) == (name in src), out[-3000:]
