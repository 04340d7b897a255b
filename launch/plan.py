"""A plan: the cells of a command, their configs (validated), and the sweep folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from harness.cellkey import CellKey
from harness.records import is_done
from launch import sweepdir, validate
from launch.compose import Planner, hydra_context


@dataclass
class Plan:
    base: DictConfig
    cells: list[CellKey]
    configs: dict[CellKey, DictConfig]
    sweep: sweepdir.SweepDir

    @property
    def executor(self) -> str:
        return str(self.base.cluster.executor)

    def cell_dir(self, cell: CellKey) -> Path:
        return self.sweep.cell_dir(cell)

    def todo(self) -> list[CellKey]:
        return [c for c in self.cells if not is_done(self.cell_dir(c))]


def make(overrides: list[str], today: str | None = None) -> Plan:
    """Compose, expand and validate; raises ConfigError before anything is written."""
    with hydra_context():
        planner = Planner(overrides)
        cells = planner.cells()
        configs = {c: planner.config(c) for c in cells}
    if len(set(cells)) != len(cells):
        raise validate.ConfigError(
            "the matrix names a cell twice; check the gpu/dram/policy/jps lists"
        )
    base = next(iter(configs.values())) if configs else planner.base
    for cfg in configs.values():
        validate.check_cell(cfg)  # typed first (launch.schema.typed): kinds, ranges, files
        if cfg.cluster.executor == "local":
            validate.check_local_machine(cfg)
    validate.check_workloads(configs.values())  # each distinct workload built once
    identities = {c.rel_dir: sweepdir.cell_identity(cfg) for c, cfg in configs.items()}
    sweep = sweepdir.choose(base, identities, today=today)
    return Plan(base=base, cells=cells, configs=configs, sweep=sweep)
