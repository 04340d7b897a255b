"""Checks that run at planning time (``--dry-run`` too), before anything is submitted.

Each check raises ConfigError with one line naming the key, the bad value and the fix. A
cell's config is first made typed (``launch.schema.typed``: kinds, ranges, names, files);
then the checks across sections (engine vs GPU, DRAM vs node, the policy's own, the model
folder) and, once per distinct workload, building the cell's jobs (``workloads.build``).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import psutil
from omegaconf import DictConfig, OmegaConf

import workloads
from harness import kv_size, policies
from harness.errors import ConfigError
from harness.workers import turns_per_job
from launch import schema
from launch.schema import ClusterConf, Config, Device, EngineConf

ENGINE_DEVICE = {"vllm-cpu": "cpu", "vllm-cuda": "cuda"}


def node_mem_gb(cluster: ClusterConf | DictConfig) -> float | None:
    """What a node can give a job: ``cluster.node_mem_gb``, else (0) this machine's memory
    for the local executor and the largest node ``sinfo`` reports for SLURM (None: no sinfo
    here, e.g. a dry run on a laptop; then DRAM is checked on the cluster)."""
    if cluster.node_mem_gb:
        return float(cluster.node_mem_gb)
    if cluster.executor == "slurm":
        from launch.cluster import slurm_node_mem_gb

        return slurm_node_mem_gb(cluster.partition)
    return psutil.virtual_memory().total / 2**30


def mem_request_gb(cfg: Config | DictConfig) -> int:
    """What the job asks the scheduler for: the offload tier plus the server's own reserve."""
    return int(cfg.dram.gb) + int(cfg.cluster.host_reserve_gb)


class PolicyUnavailable(ConfigError):
    """A policy that cannot run as configured (its engine, its environment, its settings)."""

    def __init__(self, message: str, policy: str) -> None:
        super().__init__(message)
        self.policy = policy


def check_cell(cfg: DictConfig) -> Config:
    """Every check of one cell that needs no other cell; returns the typed config."""
    typed = schema.typed(cfg)
    check_engine_gpu(typed)
    check_dram(typed)
    try:
        policies.of(cfg).validate(cfg)
    except ConfigError as e:
        raise PolicyUnavailable(str(e), str(cfg.policy.name)) from None
    check_model(typed)
    check_kv_room(cfg)
    check_host(typed)
    return typed


def check_kv_room(cfg: DictConfig) -> None:
    """The GPU's share left after the weights holds a KV cache at all (vLLM fails at start
    otherwise); reckoned by ``harness.kv_size`` (a KV cache too small for one request of
    ``model.max_model_len`` is a plan warning: launch.plan.kv_warnings)."""
    est = kv_size.estimate(cfg)
    if est is None or est.gib > 0:
        return
    need = est.utilization_for(int(cfg.model.max_model_len))
    more = f"raise it to at least {need:.2f} (one request of model.max_model_len), " \
        if need is not None else ""  # fmt: skip
    raise ConfigError(
        f"engine.gpu_memory_utilization={cfg.engine.gpu_memory_utilization} on gpu="
        f"{cfg.gpu.name} leaves no room for a KV cache ({est.how} = {est.gib:.1f} GiB): vLLM "
        f"would fail at start; {more}choose a GPU with more memory, or a smaller model"
    )


def check_engine_gpu(cfg: Config) -> None:
    want = Device.cuda if cfg.gpu.cuda else Device.cpu
    if cfg.engine.device != want:
        fix = "engine=vllm-cuda" if want == "cuda" else "engine=vllm-cpu (or a GPU: gpu=h100 ...)"
        raise ConfigError(
            f"gpu={cfg.gpu.name} needs a {want.upper()} engine but engine={cfg.engine.name} "
            f"runs on {cfg.engine.device.upper()}; use {fix}"
        )


def check_dram(cfg: Config) -> None:
    need, have = mem_request_gb(cfg), node_mem_gb(cfg.cluster)
    if have is not None and need > have:
        source = ("cluster.node_mem_gb" if cfg.cluster.node_mem_gb
                  else "sinfo's largest node" if cfg.cluster.executor == "slurm"
                  else "this machine's memory")  # fmt: skip
        raise ConfigError(
            f"dram={cfg.dram.gb} asks for {need} GB of host memory (dram + "
            f"cluster.host_reserve_gb={cfg.cluster.host_reserve_gb}; GB = GiB, as SLURM's --mem) "
            f"but a {cfg.cluster.name} node gives {have:.0f} GB ({source}); choose a smaller "
            f"dram, or another cluster (cluster=<profile>)"
        )


def check_model(cfg: Config) -> None:
    from harness.server import model_path

    if not (Path(model_path(cfg)) / "config.json").exists():
        raise ConfigError(
            f"model.path={cfg.model.path} has no config.json; point it at a model folder"
        )


@functools.lru_cache(maxsize=32)
def _loopback(host: str) -> bool | str:
    """Whether ``host`` is loopback, or why it does not resolve (once per planning run)."""
    from harness import guard

    try:
        return guard.is_loopback(host)
    except (OSError, UnicodeError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def check_host(cfg: Config) -> None:
    """``host`` resolves here, and is loopback unless ``expose=true`` allows more."""
    loopback = _loopback(cfg.host)
    if isinstance(loopback, str):
        raise ConfigError(
            f"host={cfg.host!r} does not resolve here ({loopback}); give an address or name "
            f"of the node (default 127.0.0.1)"
        )
    if not loopback and not cfg.expose:
        raise ConfigError(
            f"host={cfg.host} would expose the server beyond this machine (its OpenAI API, "
            f"/metrics and every other endpoint, guarded by the per-cell API key); keep "
            f"host=127.0.0.1, or allow it with expose=true"
        )


def check_host_bindable(host: str) -> None:
    """The local executor's server can listen on ``host`` on this machine."""
    from harness.server import free_port

    try:
        free_port(host)
    except OSError as e:
        raise ConfigError(
            f"host={host} cannot be listened on here ({e.strerror or e}); give an address "
            f"of this machine (default 127.0.0.1)"
        ) from None


def workload_key(cfg: DictConfig) -> str:
    """What makes a cell's jobs: its workload config, the model's vocabulary and the JPS."""
    return json.dumps(
        [OmegaConf.to_container(cfg.workload, resolve=True), cfg.model.first_token_id,
         cfg.model.vocab_size, float(cfg.jps)],
        sort_keys=True, default=str,
    )  # fmt: skip


def check_workloads(cfgs: Iterable[DictConfig]) -> dict[str, float]:
    """Build every cell's jobs as the harness will (``workloads.build``), so a workload that
    cannot be made (a missing or unreadable trace, a tool-time file of no numbers, token ids
    outside the model's vocabulary) is refused now. Cells that share a workload config, the
    model's vocabulary and the JPS (cells of different policies, GPUs of one model) share one
    build: a 60-cell sweep builds 5 workloads. A workload whose longest request (a job's last
    prompt and its output) exceeds ``model.max_model_len`` is refused too: vLLM would answer
    those requests 400, and the jobs would end in error rows. Returns each one's mean turns
    (requests) per job, by :func:`workload_key`."""
    turns: dict[str, float] = {}
    longest: dict[str, tuple[int, int]] = {}  # key -> (tokens, job id) of its longest request
    for cfg in cfgs:
        key = workload_key(cfg)
        if key not in turns:
            try:
                jobs = workloads.build(cfg).jobs
            except workloads.WorkloadError as e:
                raise ConfigError(str(e)) from None
            turns[key] = turns_per_job(jobs)
            longest[key] = max(((j.prompt_tokens(j.n_turns) + j.output_tokens(j.n_turns),
                                 j.job_id) for j in jobs), default=(0, -1))  # fmt: skip
        tokens, job = longest[key]
        if tokens > int(cfg.model.max_model_len):
            raise ConfigError(
                f"workload {cfg.workload.name}: job {job}'s last turn needs {tokens:,} tokens "
                f"(prompt and output), more than model.max_model_len={cfg.model.max_model_len} "
                f"of model {cfg.model.name}; vLLM would refuse it. Raise model.max_model_len "
                f"(the KV cache must hold one such request) or shorten the workload")
    return turns


def check_local_machine(cfg: DictConfig) -> None:
    """What the local executor needs of this machine: the host to listen on, the engine
    installed, a GPU for CUDA."""
    check_host_bindable(str(cfg.host))
    if cfg.engine.device == "cuda" and not has_gpu():
        raise ConfigError(
            f"engine={cfg.engine.name} needs a CUDA GPU and this machine has none (no nvidia-smi "
            f"or /dev/nvidia0); run on a GPU node (cluster=pace) or use gpu=cpu engine=vllm-cpu"
        )
    if cfg.engine.python:
        py = shutil.which(str(cfg.engine.python))
        if py is None:
            raise ConfigError(f"engine.python={cfg.engine.python} is not an executable "
                              f"interpreter on this machine; point it at one, or unset it "
                              f"(engine.python=null: this environment's)")  # fmt: skip
        return  # another interpreter: its engine is checked at server start
    if policies.of(cfg).python(cfg):
        return  # the policy's own interpreter: checked by the policy
    check_engine_installed(cfg.engine)


def check_engine_installed(engine: EngineConf | DictConfig) -> None:
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
