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


def fingerprint(cells: dict[str, dict]) -> str:
    blob = json.dumps(cells, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


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
    """The sweep folder for these cells: explicit, resumable, or new (dated today)."""
    fp = fingerprint(cells)
    name = base.experiment.name
    if base.sweep_dir:
        target = Path(base.sweep_dir)
    else:
        root = _results_root(base)
        same = [d for d in sorted(root.glob(f"*_{name}")) if _fp_of(d) == fp]
        today = today or datetime.now(UTC).strftime("%Y%m%d")
        target = same[-1] if same else root / f"{today}_{name}"
    sd = SweepDir(target.resolve())
    if sd.exists:
        sd.meta = json.loads((target / SWEEP_JSON).read_text())
        if sd.meta.get("fingerprint") != fp:
            raise ConfigError(_mismatch(target, sd.meta.get("cells", {}), cells))
        return sd
    sd.meta = {
        "kvbench_sweep": 1,
        "name": name,
        "fingerprint": fp,
        "created_utc": datetime.now(UTC).isoformat(),
        "git": git_commit(),
        "matrix": sorted(cells),
        "cells": cells,
        "submissions": [],
    }
    return sd


def _fp_of(d: Path) -> str | None:
    try:
        return json.loads((d / SWEEP_JSON).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def _mismatch(target: Path, old: dict, new: dict) -> str:
    if set(old) != set(new):
        gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        what = f"cells differ (only in the folder: {gone[:3]}; only in the command: {added[:3]})"
    else:
        k = next(k for k in sorted(new) if old[k] != new[k])
        keys = _diff_keys(old[k], new[k])
        what = f"config differs in {', '.join(keys[:5])} (cell {k})"
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
