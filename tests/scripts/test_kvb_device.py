"""scripts/device/kvb-device.sh, the device procedure (docs/validation/README.md), planned here.

The script runs on the lent GPU machine; what it asks the suite to run can be checked here: its
`sweep` entries with `KVB_EXTRA='cluster.executor=slurm --dry-run'` plan the same cells and
print them without a GPU and without submitting anything (a SLURM dry run needs no
controller). The script needs `.vllm-run/env.sh` (the vLLM bundle's, git-ignored), so it runs
from a throwaway view of the repository: every top-level entry linked, `.vllm-run/` an empty
stand-in, so nothing of the checkout is written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo-view")
    for entry in REPO.iterdir():
        if entry.name not in {".vllm-run", ".git", "results"}:
            (root / entry.name).symlink_to(entry)
    (root / ".vllm-run").mkdir()
    (root / ".vllm-run" / "env.sh").write_text("# stand-in: the suite's own Python is on PATH\n")
    return root


def _plan(view: Path, tmp_path: Path, *entries: str, **knobs: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OUT": str(tmp_path / "out"),
        "KVB_SWEEP": str(tmp_path / "sweep"),
        "KVB_NAME": "h200_sched",
        "KVB_JPS": "[10]",
        "KVB_EXTRA": "cluster.executor=slurm --dry-run",
        **knobs,
    }
    p = subprocess.run(
        ["bash", "scripts/device/kvb-device.sh", "sweep", *entries],
        cwd=view,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def _planned(out: str) -> list[str]:
    """The cells the dry runs would submit, one line per array ("h200 · 64 GB · fcfs · ...")."""
    return re.findall(r"\d+ cell\(s\): (.+)", out)


def test_entries_run_in_order_and_a_tail_overrides_one_entry_only(view, tmp_path):
    out = _plan(
        view,
        tmp_path,
        "predictive_prefetch:fcfs",
        "native_offload:fcfs+dram=100",
        "lmcache:program",
        "fcfs:program+dram=16+jps=[3,6]",
    )
    assert _planned(out) == [
        "h200 · 64 GB · predictive_prefetch · fcfs order · 10 JPS",
        "h200 · 100 GB · native_offload · fcfs order · 10 JPS",  # the tail, for this entry
        "h200 · 64 GB · lmcache · program order · 10 JPS",  # the next entry: back to KVB_DRAM
        # two keys replaced: both JPS levels on one server
        "h200 · 16 GB · fcfs · program order · 3 JPS, h200 · 16 GB · fcfs · program order · 6 JPS",
    ]
    # each entry's own log, the tail in its name
    logs = sorted(p.name for p in (tmp_path / "out").glob("sweep-*.log"))
    assert "sweep-native_offload-fcfs-dram=100.log" in logs
    assert "sweep-predictive_prefetch-fcfs.log" in logs


def test_a_bare_policy_takes_every_order_of_kvb_sched(view, tmp_path):
    out = _plan(view, tmp_path, "fcfs", KVB_SCHED="program,fcfs")
    assert _planned(out) == [
        "h200 · 64 GB · fcfs · program order · 10 JPS",
        "h200 · 64 GB · fcfs · fcfs order · 10 JPS",
    ]


def test_an_axis_joins_the_campaign_folder_and_another_config_is_refused(view, tmp_path):
    """The H200 campaign's folder (its fixture) extended as lease 2 did: a `dram` tail is a new
    cell of the same sweep; a tail that changes the shared config is refused for that entry by
    the suite (launch/sweepdir.py), and the entries after it still run."""
    shutil.copytree(REPO / "tests/fixtures/h200_seed/20261129_h200_sched", tmp_path / "sweep")
    out = _plan(
        view,
        tmp_path,
        "fcfs:fcfs",  # done in the folder: nothing to run
        "fcfs:fcfs+workload.n_jobs=20",  # another shared config
        "lmcache:program+dram=100",  # a new cell of the same sweep
    )
    assert "every cell is complete; nothing would be submitted (1 done" in out
    assert re.search(r"holds a sweep made by a different config: config differs in\s+"
                     r"workload\.n_jobs", out)
    assert _planned(out) == ["h200 · 100 GB · lmcache · program order · 10 JPS"]
