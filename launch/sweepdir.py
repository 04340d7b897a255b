"""Sweep folders: ``results/<YYYYMMDD>_<name>/`` with ``sweep.json`` and one folder per cell.

A sweep's identity is a hash of its cells' resolved configs (as dora does with a grid's
overrides): running the same command again finds the folder with the same identity and
resumes it; a folder made by a different config is refused, never mixed.

Identities compare what is measured, not how it was spelled: a policy's settings are compared
with their defaults filled in (``Policy.parse_settings``), and a key that a folder's recorded
config lacks (written by a kvbench before the key existed) counts as the schema's default;
``experiment.overrides`` is left out (the configs it picks are compared as resolved).
So an upgrade that adds a config key or moves a default out of a YAML file still resumes the
sweep, while any value that changes the measurement is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import policies, records
from harness.cellkey import NAMES, CellKey
from harness.errors import ConfigError
from harness.manifest import git_commit
from launch import schema
from launch.compose import REPO_ROOT

SWEEP_JSON = "sweep.json"
# Keys that say where or how results are collected, not what is measured.
VOLATILE = ("sweep_dir", "results_dir", "cluster")


def cell_identity(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    return normalized({k: v for k, v in c.items() if k not in VOLATILE})  # type: ignore[union-attr]


def normalized(ident: dict) -> dict:
    """A recorded or new cell identity in comparable form: keys it lacks at the schema's
    defaults, the policy's settings with their defaults filled in, and no
    ``experiment.overrides`` (how the experiment picked its groups, e.g. workload=agent8: what
    they pick is compared as resolved, so respelling them keeps the folder)."""
    out = _fill(ident, _defaults())
    exp = out.get("experiment")
    if isinstance(exp, dict) and "overrides" in exp:
        out["experiment"] = {k: v for k, v in exp.items() if k != "overrides"}
    pol = out.get("policy")
    if isinstance(pol, dict):
        try:
            cls = policies.get_class(policies.impl_name(pol))
            pol = {**pol, "settings": cls.parse_settings(pol.get("settings")).to_dict()}
        except ConfigError:
            pass  # recorded by a release with other settings: compared as written
        out["policy"] = pol
    return out


@functools.cache
def _defaults() -> dict:
    """The schema's defaults per config key (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(schema.Config):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            continue
        node = f.type if isinstance(f.type, type) else getattr(schema, str(f.type), None)
        if dataclasses.is_dataclass(node):
            out[f.name] = OmegaConf.to_container(OmegaConf.structured(node))
        elif f.default is not dataclasses.MISSING and f.default != "???":
            out[f.name] = f.default
    return out


def _fill(have: dict, defaults: dict) -> dict:
    out = dict(have)
    for k, d in defaults.items():
        if d == "???":
            continue
        if k not in out:
            out[k] = d
        elif isinstance(out[k], dict) and isinstance(d, dict):
            out[k] = _fill(out[k], d)
    return out


def fingerprint(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_identity(cells: dict[str, dict]) -> dict:
    """What every cell of a sweep shares: the config without the matrix axes."""
    first = next(iter(cells.values()))
    return {k: v for k, v in first.items() if k not in NAMES}


@dataclass
class SweepDir:
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return (self.path / SWEEP_JSON).exists()

    def cell_dir(self, cell: CellKey) -> Path:
        """The cell's folder; a cell written before a later axis existed keeps its folder
        (without that axis' segment), so a resumed sweep finds what it already ran."""
        new = self.path / cell.rel_dir
        old = cell.legacy_rel_dir
        if old and not new.exists() and (self.path / old).is_dir():
            return self.path / old
        return new

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
    return open_at(target, base, cells, bfp)


def open_at(target: Path, base: DictConfig, cells: dict[str, dict],
            bfp: str | None = None) -> SweepDir:  # fmt: skip
    """The sweep folder ``target`` for these cells, as it is on disk now: its recorded cells
    merged with these (refused if they differ), or a new sweep if it has no ``sweep.json``.
    (A sweep command reads it again here once it holds the folder's lock.)"""
    bfp = bfp or fingerprint(base_identity(cells))
    name = base.experiment.name
    sd = SweepDir(Path(target).resolve())
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
    old = {rekey(k): normalized(v) for k, v in sd.meta.get("cells", {}).items()}
    if sd.meta.get("base_fingerprint") != bfp:
        keys = _diff_keys(base_identity(old), base_identity(cells)) if old else ["?"]
        if keys:
            raise ConfigError(_refuse(target, f"config differs in {', '.join(keys[:5])}"))
        # Same shared config, other stamp: a folder written before the stamp existed (or by a
        # release that computed it otherwise). Its recorded cells are the truth: adopt it.
        sd.meta["base_fingerprint"] = bfp
    for k in sorted(set(old) & set(cells)):
        if old[k] != cells[k]:
            diff = ", ".join(_diff_keys(old[k], cells[k])[:5])
            raise ConfigError(_refuse(target, f"cell {k} differs in {diff}"))
    sd.meta["cells"] = {**old, **cells}
    sd.meta["matrix"] = sorted(sd.meta["cells"])
    return sd


def rekey(rel: str) -> str:
    """A recorded cell path in today's form (a path from before an axis existed gains it)."""
    try:
        return CellKey.from_rel(rel).rel_dir
    except ValueError:
        return rel


def _fp_of(d: Path) -> str | None:
    """The fingerprint of a folder's recorded cells as this release computes it (the stamp
    where it has none: a stamp from another release may differ for the same config)."""
    try:
        meta = json.loads((d / SWEEP_JSON).read_text())
    except (OSError, ValueError):
        return None
    cells = meta.get("cells")
    if isinstance(cells, dict) and cells:
        return fingerprint(base_identity({k: normalized(v) for k, v in cells.items()}))
    return meta.get("base_fingerprint")


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
