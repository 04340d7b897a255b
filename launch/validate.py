"""Checks that run at planning time (``--dry-run`` too), before anything is submitted.

Each check raises ConfigError with one line naming the key, the bad value and the fix.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
from pathlib import Path

import psutil

from harness import policies
from harness.errors import ConfigError

ENGINE_DEVICE = {"vllm-cpu": "cpu", "vllm-cuda": "cuda"}


def node_mem_gb(cluster) -> float:
    if cluster.node_mem_gb:
        return float(cluster.node_mem_gb)
    return psutil.virtual_memory().total / 2**30


def mem_request_gb(cfg) -> int:
    """What the job asks the scheduler for: the offload tier plus the server's own reserve."""
    return int(cfg.dram.gb) + int(cfg.cluster.host_reserve_gb)


def check_cell(cfg) -> None:
    check_engine_gpu(cfg)
    check_dram(cfg)
    policies.get(cfg.policy.name).validate(cfg)
    check_model(cfg)


def check_engine_gpu(cfg) -> None:
    want = "cuda" if cfg.gpu.cuda else "cpu"
    if cfg.engine.device != want:
        fix = "engine=vllm-cuda" if want == "cuda" else "engine=vllm-cpu (or a GPU: gpu=h100 ...)"
        raise ConfigError(
            f"gpu={cfg.gpu.name} needs a {want.upper()} engine but engine={cfg.engine.name} "
            f"runs on {cfg.engine.device.upper()}; use {fix}"
        )


def check_dram(cfg) -> None:
    need, have = mem_request_gb(cfg), node_mem_gb(cfg.cluster)
    if need > have:
        raise ConfigError(
            f"dram={cfg.dram.gb} asks for {need} GB of host memory (dram + "
            f"cluster.host_reserve_gb={cfg.cluster.host_reserve_gb}) but a {cfg.cluster.name} node "
            f"gives {have:.0f} GB (cluster.node_mem_gb); choose a smaller dram"
        )


def check_model(cfg) -> None:
    from harness.server import model_path

    if not (Path(model_path(cfg)) / "config.json").exists():
        raise ConfigError(f"model.path={cfg.model.path} has no config.json; point it at a model folder")


def check_local_machine(cfg) -> None:
    """What the local executor needs of this machine: the engine installed, a GPU for CUDA."""
    if cfg.engine.device == "cuda" and not has_gpu():
        raise ConfigError(
            f"engine={cfg.engine.name} needs a CUDA GPU and this machine has none (no nvidia-smi "
            f"or /dev/nvidia0); run on a GPU node (cluster=pace) or use gpu=cpu engine=vllm-cpu"
        )
    if cfg.engine.python or policies.get(cfg.policy.name).python(cfg):
        return  # another interpreter: checked by the policy / at server start
    check_engine_installed(cfg.engine)


def check_engine_installed(engine) -> None:
    try:
        got = md.version(engine.package)
    except md.PackageNotFoundError:
        extra = "cpu" if engine.device == "cpu" else "cuda"
        raise ConfigError(
            f"engine={engine.name} needs the package {engine.package}=={engine.version}, which is "
            f"not installed; run scripts/setup.sh (or pip install -e '.[{extra}]')"
        ) from None
    if got != engine.version:
        raise ConfigError(
            f"engine={engine.name} is pinned to {engine.package}=={engine.version} but "
            f"{got} is installed; install the pinned version or set engine.version={got}"
        )


def has_gpu() -> bool:
    return bool(shutil.which("nvidia-smi")) and os.path.exists("/dev/nvidia0")
