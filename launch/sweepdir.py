"""Sweep folders: ``results/<YYYYMMDD>_<name>/`` with ``sweep.json`` and one folder per cell.

A sweep's identity is a hash of its cells' resolved configs (as dora does with a grid's
overrides): running the same command again finds the folder with the same identity and
resumes it; a folder made by a different config is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import records
from harness.errors import ConfigError
from harness.manifest import git_commit
from launch.compose import REPO_ROOT, Cell

SWEEP_JSON = "sweep.json"
# Keys that say where or how results are collected, not what is measured.
VOLATILE = ("sweep_dir", "results_dir", "cluster")


def cell_identity(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in c.items() if k not in VOLATILE}


AXES = ("gpu", "dram", "policy", "jps")


def fingerprint(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_identity(cells: dict[str, dict]) -> dict:
    """What every cell of a sweep shares: the config without the matrix axes."""
    first = next(iter(cells.values()))
    return {k: v for k, v in first.items() if k not in AXES}


@dataclass
class SweepDir:
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return (self.path / SWEEP_JSON).exists()

    def cell_dir(self, cell: Cell) -> Path:
        return self.path / cell.rel_dir

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        records.write_json(self.meta, self.path / SWEEP_JSON)

    def add_submission(self, entry: dict) -> None:
        self.meta.setdefault("submissions", []).append(entry)
        self.save()


def load(path: Path) -> SweepDir:
    f = Path(path) / SWEEP_JSON
    if not f.exists():
        raise ConfigError(f"{path} is not a sweep folder (no {SWEEP_JSON})")
    return SweepDir(Path(path), json.loads(f.read_text()))


def _results_root(base: DictConfig) -> Path:
    p = Path(base.results_dir)
    return p if p.is_absolute() else REPO_ROOT / p


def choose(base: DictConfig, cells: dict[str, dict], today: str | None = None) -> SweepDir:
    """The sweep folder for these cells: explicit, resumable, or new (dated today).

    A folder is the same sweep when its shared config (everything but the matrix axes)
    matches: then its complete cells are skipped, and new cells (another JPS, another policy)
    extend its matrix. A cell present in both with another config, or another shared config,
    is refused."""
    bfp = fingerprint(base_identity(cells))
    name = base.experiment.name
    if base.sweep_dir:
        target = Path(base.sweep_dir)
    else:
        root = _results_root(base)
        same = [d for d in sorted(root.glob(f"*_{name}")) if _fp_of(d) == bfp]
        today = today or datetime.now(UTC).strftime("%Y%m%d")
        target = same[-1] if same else root / f"{today}_{name}"
    sd = SweepDir(target.resolve())
    if not sd.exists:
        sd.meta = {
            "kvbench_sweep": 1,
            "name": name,
            "base_fingerprint": bfp,
            "created_utc": datetime.now(UTC).isoformat(),
            "git": git_commit(),
            "matrix": sorted(cells),
            "cells": cells,
            "submissions": [],
        }
        return sd
    sd.meta = json.loads((target / SWEEP_JSON).read_text())
    old = sd.meta.get("cells", {})
    if sd.meta.get("base_fingerprint") != bfp:
        keys = _diff_keys(base_identity(old), base_identity(cells)) if old else ["?"]
        if keys:
            raise ConfigError(_refuse(target, f"config differs in {', '.join(keys[:5])}"))
        # Same shared config, other stamp: a folder written before the stamp existed (or by a
        # release that computed it otherwise). Its recorded cells are the truth: adopt it.
        sd.meta["base_fingerprint"] = bfp
    for k in sorted(set(old) & set(cells)):
        if old[k] != cells[k]:
            raise ConfigError(_refuse(target, f"cell {k} differs in {', '.join(_diff_keys(old[k], cells[k])[:5])}"))
    sd.meta["cells"] = {**old, **cells}
    sd.meta["matrix"] = sorted(sd.meta["cells"])
    return sd


def _fp_of(d: Path) -> str | None:
    try:
        return json.loads((d / SWEEP_JSON).read_text()).get("base_fingerprint")
    except (OSError, ValueError):
        return None


def _refuse(target: Path, what: str) -> str:
    return (
        f"{target} holds a sweep made by a different config: {what}. Refusing to mix them; "
        f"use a new name (experiment.name=...) or sweep_dir=<another folder>"
    )


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
