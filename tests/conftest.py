"""Shared fixtures. Tiers (markers): none = no server; ``server`` = a real vLLM CPU server;
``slurm`` = the one-machine SLURM cluster (scripts/slurm-up.sh). All run in CI.

Server starts cost about a minute each on 2 cores, so the real smoke sweep runs once per
session and every test that only needs real records reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_launch(*args: str, timeout: float = 900, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "launch", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def wait_for(pred: Callable[[], object], timeout_s: float, what: str, every: float = 0.5):
    """``pred()``'s first truthy value, polled every ``every`` s; AssertionError naming
    ``what`` after ``timeout_s``. (The plugin tests' ``plugin_server.wait_for`` returns a bool
    instead, for ``assert wait_for(...)``.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def spawned_children() -> list:
    """This process's descendants started by multiprocessing's spawn (the sharded client's
    workers): what must be gone after a run ends, however it ended."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def smoke_sweep(results_root) -> Path:
    """The embedded default sweep (experiment=smoke), run for real on the CPU engine."""
    r = run_launch("sweep", f"results_dir={results_root}", "--no-report", timeout=1500)
    assert r.returncode == 0, f"smoke sweep failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    sweeps = sorted(results_root.glob("*_smoke"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def make_fork_standin(root: Path) -> str:
    """A FAKE Continuum fork environment under ``root``: an interpreter whose ``vllm`` has
    ``v1/core/estimate_with_func.py``, all that planning checks. Returns the interpreter."""
    core = root / "vllm" / "v1" / "core"
    core.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "v1", core):
        (d / "__init__.py").write_text("")
    (core / "estimate_with_func.py").write_text("")
    python = root / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return str(python)


@pytest.fixture(scope="session", autouse=True)
def continuum_fork_standin(tmp_path_factory):
    """A FAKE of the Continuum fork's environment (the fork needs CUDA and its own vLLM 0.10.2
    build): an interpreter whose ``vllm`` has ``v1/core/estimate_with_func.py``, which is all
    planning checks. Lets tests plan the seed's sweeps (they include ``policy=continuum``);
    nothing here starts the fork. A real environment named by the variable wins."""
    if os.environ.get("KVBENCH_CONTINUUM_PYTHON"):
        yield os.environ["KVBENCH_CONTINUUM_PYTHON"]
        return
    python = make_fork_standin(tmp_path_factory.mktemp("continuum-fork-standin"))
    os.environ["KVBENCH_CONTINUUM_PYTHON"] = str(python)
    yield str(python)
    del os.environ["KVBENCH_CONTINUUM_PYTHON"]


@pytest.fixture(scope="session", autouse=True)
def no_user_cluster_settings(tmp_path_factory):
    """Plans here must not depend on the developer's own cluster settings: an empty
    XDG_CONFIG_HOME (no ~/.config/kvbench/cluster.yaml), no KVBENCH_CLUSTER(_FILE). Tests of
    those settings pass their own environment (``plan.make(..., environ=...)``)."""
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "KVBENCH_CLUSTER",
                                            "KVBENCH_CLUSTER_FILE")}  # fmt: skip
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    os.environ.pop("KVBENCH_CLUSTER", None)
    os.environ.pop("KVBENCH_CLUSTER_FILE", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
