"""Helpers of the real cancel tests (test_slurm_cancel.py, test_local_cancel.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from launch import status as st
from tests.conftest import wait_for  # noqa: F401 - re-exported for the cancel tests

# One server group of two cells (the JPS levels of one server run lowest first): JPS 1 gets
# 2 jobs and ends in seconds; JPS 150 gets 300 jobs of 128 output tokens, about two minutes
# on 2 cores, so it is still running when cancel comes. (With a fixed workload.n_jobs the
# lower JPS is the longer cell: its arrivals spread out.)
SWEEP_ARGS = ("policy=fcfs", "jps=[1,150]", "workload.n_jobs=null", "workload.duration_s=2",
              "workload.completion_tokens=128")  # fmt: skip
LONG_JOBS = 300


def files_of(cell_dir: Path) -> dict[str, tuple[int, int]]:
    """name -> (bytes, mtime_ns) of every file under a cell folder."""
    return {
        str(p.relative_to(cell_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(cell_dir.rglob("*"))
        if p.is_file()
    }


def procs_under(folder: Path) -> list[str]:
    """Processes whose working folder is inside ``folder``: the vLLM server of a cell (its
    engine-core child renames itself, but keeps the folder)."""
    root = str(folder.resolve())
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            if (p.info["cwd"] or "").startswith(root):
                out.append(f"{p.info['pid']} {' '.join(p.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def wait_short_done_long_running(sweep: Path, timeout_s: float, alive: Callable[[], bool]):
    """Rows once the short cell is done and the long one runs with jobs progress."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if (sweep / "sweep.json").exists():
            _, rows = st.collect(sweep)
            short, long_ = rows
            if short["state"] == "done" and long_["state"] == "running" and long_["jobs_total"]:
                return rows
            assert long_["state"] != "done", "the long cell ended before cancel: make it longer"
            assert "failed" not in (short["state"], long_["state"]), rows
        assert alive(), "the sweep ended early"
        time.sleep(2)
    raise AssertionError(f"timed out waiting for the short cell done, the long running: {rows}")


def manifest(cell_dir: Path) -> dict:
    return json.loads((cell_dir / "manifest.json").read_text())
