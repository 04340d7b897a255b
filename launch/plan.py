"""A plan: the cells of a command, their configs (validated), and the sweep folder."""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from harness import kv_size, policies, workers
from harness.cellkey import CellKey
from harness.errors import ConfigError
from harness.records import is_done
from launch import sweepdir, validate
from launch.cluster import Choice
from launch.compose import Planner, hydra_context


@dataclass
class Plan:
    base: DictConfig
    cells: list[CellKey]
    configs: dict[CellKey, DictConfig]
    sweep: sweepdir.SweepDir
    cluster: Choice
    experiment_defaulted: bool = False  # the experiment came from naming a GPU
    identities: dict[str, dict] = field(default_factory=dict)  # cell rel_dir -> identity
    rerun_patterns: tuple[str, ...] = ()  # ``sweep --rerun PATTERN``: done cells to run again
    warnings: list[str] = field(default_factory=list)  # one line each, shown with the plan

    @property
    def executor(self) -> str:
        return str(self.base.cluster.executor)

    def cell_dir(self, cell: CellKey) -> Path:
        return self.sweep.cell_dir(cell)

    def rerun(self) -> list[CellKey]:
        """Complete cells that ``--rerun`` names: their files move to ``_attempts/<n>/`` when
        they run again (only then; nothing else moves or rewrites a complete cell)."""
        return [c for c in self.cells
                if is_done(self.cell_dir(c)) and matches(c, self.rerun_patterns)]  # fmt: skip

    def todo(self) -> list[CellKey]:
        """Cells to run: those not complete, and the complete ones ``--rerun`` names."""
        again = set(self.rerun())
        return [c for c in self.cells if c in again or not is_done(self.cell_dir(c))]

    def refresh(self) -> None:
        """Read the sweep folder again (once its lock is held: another command may have run
        cells or submitted since this plan was made)."""
        self.sweep = sweepdir.open_at(self.sweep.path, self.base, self.identities)


def matches(cell: CellKey, patterns) -> bool:
    """``cell`` is named by one of the fnmatch patterns over its folder path (``*`` spans
    ``/``): ``gpu=cpu/dram=8/policy=fcfs/*``; a pattern naming a folder above cells names them
    all (``gpu=cpu/dram=8/policy=fcfs``)."""
    rel = cell.rel_dir
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.rstrip("/") + "/*")
               for p in patterns)  # fmt: skip


def make(overrides: list[str], today: str | None = None,
         environ: dict[str, str] | None = None, rerun: list[str] | tuple[str, ...] = ()) -> Plan:
    """Compose, expand and validate; raises ConfigError before anything is written.
    ``environ``: the environment the cluster profile is found from (default: os.environ).
    ``rerun``: fnmatch patterns over cell paths whose complete cells run again (a pattern
    that names no cell of the command is refused)."""
    with hydra_context():
        planner = Planner(overrides, environ)
        cells = planner.cells()
        configs = {c: planner.config(c) for c in cells}
    if len(set(cells)) != len(cells):
        raise validate.ConfigError(
            "the matrix names a cell twice; check the gpu/dram/policy/jps lists"
        )
    base = next(iter(configs.values())) if configs else planner.base
    for cfg in configs.values():
        try:
            validate.check_cell(cfg)  # typed first (launch.schema.typed): kinds, ranges, files
        except validate.PolicyUnavailable as e:
            others = list(dict.fromkeys(c.policy for c in cells if c.policy != e.policy))
            if not others:
                raise
            raise ConfigError(f"{e}; or leave it out: policy=[{','.join(others)}]") from None
        if cfg.cluster.executor == "local":
            validate.check_local_machine(cfg)
    turns = validate.check_workloads(configs.values())  # each distinct workload built once
    identities = {c.rel_dir: sweepdir.cell_identity(cfg) for c, cfg in configs.items()}
    for pat in rerun:
        if not any(matches(c, [pat]) for c in cells):
            example = cells[0].rel_dir if cells else "gpu=<g>/dram=<d>/policy=<p>/..."
            raise ConfigError(f"--rerun {pat}: names no cell of this sweep; a pattern is "
                              f"matched (fnmatch, * spans /) against cell paths like "
                              f"{example}")  # fmt: skip
    sweep = sweepdir.choose(base, identities, today=today)
    _check_writable(sweep.path)
    return Plan(base=base, cells=cells, configs=configs, sweep=sweep, cluster=planner.cluster,
                experiment_defaulted=planner.experiment_defaulted, identities=identities,
                rerun_patterns=tuple(rerun),
                warnings=client_warnings(configs, turns, environ)
                + kv_warnings(configs))  # fmt: skip


def client_warnings(configs: dict[CellKey, DictConfig], turns: dict[str, float],
                    environ: Mapping[str, str] | None = None) -> list[str]:  # fmt: skip
    """A line for each group of cells whose expected request rate (jps x turns per job) is
    more than their client workers carry on time (``harness.workers``): with how many they
    need and how to give them. Cores: ``cluster.cpus_per_task`` on SLURM, this machine's
    (``environ``'s SLURM allocation, else the CPU affinity) for the local executor."""
    groups: dict[tuple[int, float, float, str], list[CellKey]] = {}
    for cell, cfg in configs.items():
        per_job = turns[validate.workload_key(cfg)]
        rate = workers.request_rate(cfg.jps, per_job)
        if cfg.cluster.executor == "slurm":
            cores = workers.Cores(int(cfg.cluster.cpus_per_task), "cluster.cpus_per_task")
        else:
            cores = workers.cell_cores(os.environ if environ is None else environ)
        setting, device = cfg.workload.client_workers, str(cfg.engine.device)
        choice = workers.choose(setting, rate, device, cores)
        if choice.short:
            fix = _more_workers(choice.needed, setting, device, cores)
            groups.setdefault((choice.workers, float(cfg.jps), per_job, fix), []).append(cell)
    out = []
    for (n, jps, per_job, fix), cells in groups.items():
        rate = workers.request_rate(jps, per_job)
        shown = ", ".join(c.rel_dir for c in cells[:2]) + (
            f" and {len(cells) - 2} more" if len(cells) > 2 else "")
        out.append(f"client: {len(cells)} cell(s) expect {rate:.3g} requests/s ({jps:g} jobs/s x "
                   f"{per_job:.3g} turns), more than {n} client worker(s) carry with arrivals on "
                   f"time ({workers.WORKER_RPS:g} requests/s each, harness/workers.py); their "
                   f"arrival lag would count against the policy (a cell over workload.max_lag_s "
                   f"is marked invalid). {fix}. Cells: {shown}")  # fmt: skip
    return out


def kv_warnings(configs: dict[CellKey, DictConfig]) -> list[str]:
    """Lines from the KV cache the cells' engines will allocate (``harness.kv_size``), one per
    group of cells: a KV cache too small for one request of ``model.max_model_len`` (vLLM
    refuses to start), and a policy's write-through host tier smaller than the KV cache (it can
    serve almost nothing, so the cells would measure its cost and not what it is for)."""
    groups: dict[str, list[CellKey]] = {}
    for cell, cfg in configs.items():
        kv = kv_size.estimate(cfg)
        if kv is None or kv.gib <= 0:  # none reckoned, or no room at all (check_kv_room)
            continue
        n = int(cfg.model.max_model_len)
        if kv.tokens < n:
            need = kv.utilization_for(n)
            fix = f"raise engine.gpu_memory_utilization to about {need:.2f} or " \
                if need is not None else ""  # fmt: skip
            groups.setdefault(
                f"KV cache: about {kv.tokens:,} tokens ({kv.how}), fewer than one request of "
                f"model.max_model_len={n} needs: vLLM will likely refuse to start; {fix}lower "
                f"model.max_model_len", []).append(cell)  # fmt: skip
        tier = policies.of(cfg).write_through_gib(cfg)
        if tier is not None and tier < kv.gib:
            groups.setdefault(
                f"host tier: policy={cfg.policy.name}: {kv_size.small_tier(tier, kv.gib, kv.how)}"
                f" (docs/validation/h200-20261129-seed.md)", []).append(cell)  # fmt: skip
    out = []
    for line, cells in groups.items():
        shown = ", ".join(c.rel_dir for c in cells[:2]) + (
            f" and {len(cells) - 2} more" if len(cells) > 2 else "")
        out.append(f"{line}. Cells: {shown}")
    return out


def _more_workers(need: int, setting, device: str, cores: workers.Cores) -> str:
    if setting != workers.AUTO:
        return f"They need {need}: set workload.client_workers={need}"
    want = workers.cores_for(need, device)
    if cores.source == "cluster.cpus_per_task":
        return (f"They need {need}, which auto gives with cluster.cpus_per_task={want} (now "
                f"{cores.n}); or set workload.client_workers={need}")  # fmt: skip
    return (f"They need {need}; auto gives fewer on {cores.n} cores ({cores.source}) beside the "
            f"{device} server: run them where {want} cores are free, or set "
            f"workload.client_workers={need} to share the cores")  # fmt: skip


def _check_writable(path: Path) -> None:
    """The sweep folder can be made (or written) here: a probe folder is made and removed in
    its nearest existing ancestor. Checked at planning, so a dry run says it too."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        os.rmdir(tempfile.mkdtemp(prefix=".kvbench-probe-", dir=probe))
    except OSError as e:
        raise ConfigError(f"results_dir: cannot write the sweep folder {path} ({e}); set "
                          f"results_dir= or sweep_dir= to a writable folder") from None
