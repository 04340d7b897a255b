"""Config schemas: dataclasses registered in Hydra's ConfigStore.

Every YAML file under ``conf/`` is merged onto these types, so an unknown key or a value
of the wrong type is an error at compose time, before anything is planned or submitted.
Each field says what it means; units are in the name (``_gb``, ``_s``, ``_min``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SlurmGpuRequest:
    gres: str | None = None  # e.g. "gpu:h100:1"; None for a CPU-only cell
    constraint: str | None = None  # node feature(s), e.g. "H100" (ANDed with the cluster's)


@dataclass
class GpuConf:
    name: str = MISSING  # short name, also the cell folder's gpu=<name>
    model: str = MISSING  # marketing name, e.g. "NVIDIA H100 80GB HBM3"
    vram_gb: float = MISSING  # device memory; 0 for the CPU engine
    pcie_gen: int = 0  # host link generation (0: none, the CPU engine)
    pcie_lanes: int = 0  # host link lanes
    host_link_gbps: float = 0.0  # nominal one-direction host<->device bandwidth, GB/s
    cuda: bool = True  # whether a CUDA device is needed
    default_engine: str = "vllm-cuda"  # engine used when the command names none
    slurm: SlurmGpuRequest = field(default_factory=SlurmGpuRequest)


@dataclass
class DramConf:
    # The seed's "DRAM size": the host-memory budget of the offload tier (LMCache's local CPU
    # backend, vLLM's CPU offload, our host tier). The scheduler is asked for
    # gb + cluster.host_reserve_gb, so the tier never competes with the server process.
    gb: int = MISSING


@dataclass
class PolicyConf:
    name: str = MISSING  # registry key in harness.policies
    description: str = ""
    engines: list[str] = field(default_factory=lambda: ["vllm-cpu", "vllm-cuda"])
    uses_offload_tier: bool = False  # True: capacity comes from dram.gb
    sends_hints: bool = True  # per-request hints in the body (plain vLLM ignores them)
    continuum_fields: bool = False  # also send Continuum's top-level job_id / is_last_step
    settings: dict[str, Any] = field(default_factory=dict)  # policy-specific knobs
    extra_args: list[str] = field(default_factory=list)  # appended to the server command
    env: dict[str, str] = field(default_factory=dict)  # added to the server environment


@dataclass
class ModelConf:
    name: str = MISSING
    path: str = MISSING  # folder with config.json; relative paths are from the repo root
    served_name: str = "model"
    load_format: str = "dummy"  # dummy: random weights from config.json, no download
    skip_tokenizer_init: bool = True  # prompts are token ids
    max_model_len: int = 32768
    vocab_size: int = MISSING  # token ids are drawn from [first_token_id, vocab_size)
    first_token_id: int = 10  # skip special ids at the bottom of the vocabulary


@dataclass
class ToolTimeConf:
    dist: str = "fixed"  # fixed | exponential | lognormal | file
    mean_s: float = 0.5  # fixed value, or the mean of exponential / lognormal
    sigma: float = 0.5  # lognormal shape
    file: str | None = None  # per-turn values (one number per line, cycled) for dist=file


@dataclass
class WorkloadConf:
    name: str = MISSING
    n_jobs: int | None = 150  # jobs per cell; or None and set duration_s
    duration_s: float | None = None  # arrival window; n_jobs = round(jps * duration_s)
    n_turns: int = 8
    first_prompt_tokens: int = 1600  # turn-1 prompt
    tool_output_tokens: list[int] = field(
        default_factory=lambda: [1024, 1280, 1536, 1792, 2048, 2304, 2560]
    )  # the fixed sizes, shuffled per job (one per gap, cycled if turns-1 > sizes)
    completion_tokens: int = 20
    tool: ToolTimeConf = field(default_factory=ToolTimeConf)
    seed: int = 42
    trace: str | None = None  # replay a workload file (parquet/jsonl) instead of generating
    request_timeout_s: float = 600.0  # per request
    max_retries: int = 2  # retries of a request that failed before any byte came back
    max_lag_s: float = 0.25  # a cell whose client lag p99 exceeds this is flagged


@dataclass
class EngineConf:
    name: str = MISSING  # vllm-cpu | vllm-cuda
    package: str = MISSING  # distribution that provides vllm
    version: str = MISSING  # pinned version; checked against what is installed
    device: str = "cuda"  # cpu | cuda
    python: str | None = None  # interpreter for the server; None: this one
    default_model: str = "llama31_8b"
    startup_timeout_s: float = 600.0
    gpu_memory_utilization: float = 0.9  # CUDA: fraction of VRAM vLLM takes
    kv_cache_space_gb: float | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE
    max_num_batched_tokens: int = 8192  # equal across policies
    max_num_seqs: int = 256
    block_size: int | None = None  # None: the engine's default
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ClusterConf:
    name: str = MISSING
    executor: str = "local"  # local | slurm
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 120  # wall-clock limit per cell, minutes
    cpus_per_task: int = 8
    node_mem_gb: int = 0  # memory a node can give a job; 0: this machine's (local)
    host_reserve_gb: int = 32  # host memory for the server process itself, on top of dram
    array_parallelism: int = 8  # cells of one array running at once
    max_requeue: int = 3  # requeues after pre-emption or time-out
    constraint: str | None = None  # extra node features, ANDed with the gpu's
    setup: list[str] = field(default_factory=list)  # shell lines run before each cell
    slurm_extra: dict[str, Any] = field(default_factory=dict)  # more sbatch options
    gpus_available: int | None = None  # local: GPUs the machine has (None: detect)
    # Run the JPS levels of one gpu/dram/policy on one server, one after another, draining
    # the engine and resetting its prefix cache between cells (recorded in each manifest).
    # Saves a server start (1-2 min) per cell; off where cells should run in parallel.
    share_server: bool = False


@dataclass
class MatrixConf:
    gpu: list[str] = field(default_factory=lambda: ["cpu"])
    dram: list[int] = field(default_factory=lambda: [8])
    dram_by_gpu: dict[str, int] = field(default_factory=dict)  # pairs gpu -> dram, if set
    policy: list[str] = field(default_factory=lambda: ["fcfs"])
    jps: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class ExperimentConf:
    name: str = MISSING  # the sweep folder is results/<YYYYMMDD>_<name>
    description: str = ""
    overrides: list[str] = field(default_factory=list)  # applied before the command's own
    matrix: MatrixConf = field(default_factory=MatrixConf)


@dataclass
class Config:
    gpu: GpuConf = MISSING
    dram: DramConf = MISSING
    policy: PolicyConf = MISSING
    model: ModelConf = MISSING
    workload: WorkloadConf = MISSING
    engine: EngineConf = MISSING
    cluster: ClusterConf = MISSING
    experiment: ExperimentConf = MISSING
    jps: float = 1.0  # arrival rate of this cell (set per cell by the matrix)
    results_dir: str = "results"  # relative to the repo root
    sweep_dir: str | None = None  # explicit sweep folder (default results/<date>_<name>)
    host: str = "127.0.0.1"  # where the server listens


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in [
        ("gpu", GpuConf),
        ("dram", DramConf),
        ("policy", PolicyConf),
        ("model", ModelConf),
        ("workload", WorkloadConf),
        ("engine", EngineConf),
        ("cluster", ClusterConf),
        ("experiment", ExperimentConf),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=node)
