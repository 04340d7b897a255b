"""The cell key: the axes that identify one cell of a sweep, defined once.

A cell is one point of the GPU x DRAM x policy x scheduling order x JPS matrix.
:class:`CellKey` owns the axes
(their order, types and folder format), the cell's folder path, its label in figures, parsing
back from a folder path or a manifest, and ordering. Planning, the sweep folder, status,
analysis and compare all use it; nothing else spells the axes.

Adding an axis is a change here: a field of :class:`CellKey` made with :func:`axis`. Give it
a ``legacy`` value: a sweep folder written before the axis existed reads with that value, and
its folders (which lack the segment) still parse. Planning expands the matrix over every axis
(``launch.compose``); an axis that is a Hydra config group (``group=True``) selects
``conf/<axis>/<value>.yaml``, the others set the top-level config key of that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64()}
_PANDAS = {str: "str", int: "int64", float: "float64"}
_NO_LEGACY = object()


def axis(*, doc: str, group: bool, source: str, legacy: Any = _NO_LEGACY, unit: str = "") -> Any:
    """A :class:`CellKey` field: ``doc`` says what it is, ``group`` whether it is a Hydra
    config group, ``source`` where a composed config holds its value (a dotted key),
    ``legacy`` the value of folders written before the axis existed (also the value of a
    key that does not name it)."""
    meta = {"doc": doc, "group": group, "source": source, "legacy": legacy, "unit": unit}
    if legacy is _NO_LEGACY:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=legacy, metadata=meta)


class CellKeyError(ValueError):
    """A folder path, manifest or mapping that does not name a cell."""


def fmt_value(value: Any) -> str:
    """An axis value as it appears in a folder name: ``3`` for 3.0, ``0.25``, ``h100``."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


@dataclass(frozen=True, order=True, kw_only=True)
class CellKey:
    """One cell. Ordered by the axes in this order (gpu, dram, policy, sched, jps)."""

    gpu: str = axis(doc="GPU config (conf/gpu/<name>.yaml)", group=True, source="gpu.name")
    dram: int = axis(doc="host DRAM budget of the offload tier (conf/dram/<gb>.yaml)",
                     group=True, source="dram.gb", unit="GB")
    policy: str = axis(doc="KV-cache policy (conf/policy/<name>.yaml)", group=True,
                       source="policy.name")
    sched: str = axis(doc="scheduling order: fcfs (the engine's default) or program "
                          "(program-level FCFS: each request carries its job's rank by arrival "
                          "as its priority)", group=False, source="sched", legacy="fcfs",
                      unit="order")
    jps: float = axis(doc="job arrival rate, jobs per second", group=False, source="jps",
                      unit="JPS")

    def __post_init__(self) -> None:
        for a in AXES:
            v = getattr(self, a.name)
            if a.kind is float and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, a.name, float(v))
            elif not isinstance(v, a.kind) or isinstance(v, bool):
                raise CellKeyError(f"cell axis {a.name}={v!r} is not {a.kind.__name__}")

    # --- views ---------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {a.name: getattr(self, a.name) for a in AXES}

    @property
    def rel_dir(self) -> str:
        """The cell's folder under the sweep, Hive style: ``gpu=h100/dram=64/.../jps=3``."""
        return "/".join(f"{a.name}={fmt_value(getattr(self, a.name))}" for a in AXES)

    @property
    def legacy_rel_dir(self) -> str | None:
        """Where a release before the later axes wrote this cell: the path without the
        segments of axes at their legacy value (None when no axis is at its legacy value)."""
        parts = [f"{a.name}={fmt_value(getattr(self, a.name))}" for a in AXES
                 if not (a.has_legacy and getattr(self, a.name) == a.legacy)]
        return "/".join(parts) if len(parts) < len(AXES) else None

    @property
    def label(self) -> str:
        """How figures and tables name the cell: ``h100 · 64 GB · fcfs · 3 JPS``."""
        return " · ".join(a.label(getattr(self, a.name)) for a in AXES)

    def __str__(self) -> str:
        return self.rel_dir

    def replace(self, **changes: Any) -> CellKey:
        return dataclasses.replace(self, **changes)

    # --- parsing ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> CellKey:
        """From axis -> value (strings are parsed); a missing axis takes its legacy value."""
        vals: dict[str, Any] = {}
        for a in AXES:
            if d.get(a.name) is not None:
                vals[a.name] = a.parse(d[a.name])
            elif a.has_legacy:
                vals[a.name] = a.legacy
            else:
                raise CellKeyError(f"no value for the cell axis {a.name!r} in {dict(d)!r}")
        return cls(**vals)

    @classmethod
    def from_rel(cls, rel: str | Path) -> CellKey:
        """From a cell folder relative to its sweep (``gpu=h100/dram=64/policy=fcfs/jps=3``)."""
        parts = [p for p in Path(rel).as_posix().strip("/").split("/") if p]
        seen: dict[str, str] = {}
        where = f"cell folder {str(rel)!r} does not parse as {'/'.join(f'{n}=' for n in NAMES)}"
        for p in parts:
            name, eq, value = p.partition("=")
            if not eq or name not in NAMES or name in seen:
                raise CellKeyError(f"{where}: {p!r}")
            seen[name] = value
        if list(seen) != [n for n in NAMES if n in seen]:
            raise CellKeyError(f"{where}: axes out of order")
        try:
            return cls.from_mapping(seen)
        except CellKeyError as e:
            raise CellKeyError(f"{where}: {e}") from None

    @classmethod
    def from_config(cls, cfg: Any) -> CellKey:
        """The cell a composed config describes (planning set its axes' values)."""
        from omegaconf import OmegaConf

        return cls.from_mapping({a.name: OmegaConf.select(cfg, a.source) for a in AXES})

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> CellKey:
        cell = manifest.get("cell")
        if not isinstance(cell, Mapping):
            raise CellKeyError("manifest has no 'cell' mapping")
        return cls.from_mapping(cell)


@dataclass(frozen=True)
class Axis:
    name: str
    kind: type
    doc: str
    group: bool
    source: str
    legacy: Any
    unit: str

    @property
    def has_legacy(self) -> bool:
        """Whether folders written before this axis existed can be read (at ``legacy``)."""
        return self.legacy is not _NO_LEGACY

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW[self.kind]

    @property
    def dtype(self) -> str:
        return _PANDAS[self.kind]

    def parse(self, value: Any) -> Any:
        try:
            out = self.kind(value)
        except (TypeError, ValueError):
            raise CellKeyError(f"{self.name}={value!r} is not {self.kind.__name__}") from None
        if self.kind is int and str(value).strip() not in (str(out), f"{out}.0"):
            raise CellKeyError(f"{self.name}={value!r} is not an integer")
        return out

    def label(self, value: Any) -> str:
        v = fmt_value(value)
        return f"{v} {self.unit}" if self.unit else v


def _axes() -> tuple[Axis, ...]:
    out = []
    for f in dataclasses.fields(CellKey):
        kind = {"str": str, "int": int, "float": float}[str(f.type)]
        m = f.metadata
        out.append(Axis(f.name, kind, m["doc"], m["group"], m["source"], m["legacy"], m["unit"]))
    return tuple(out)


AXES: tuple[Axis, ...] = _axes()
NAMES: tuple[str, ...] = tuple(a.name for a in AXES)
BY_NAME: dict[str, Axis] = {a.name: a for a in AXES}
ARROW_SCHEMA = pa.schema([(a.name, a.arrow) for a in AXES])
PANDAS_DTYPES: dict[str, str] = {a.name: a.dtype for a in AXES}


def iter_cell_dirs(root: Path) -> Iterator[tuple[Path, CellKey]]:
    """Cell folders under a sweep folder, with the key their path names, in key order.

    A cell folder is a chain of ``<axis>=<value>`` folders ending in the last axis (folders
    written before an axis existed lack its segment and still parse); folders starting with
    ``_`` or ``.`` (attempts, the shared server's workdir) are not cells. Raises CellKeyError
    for a folder that looks like a cell (it ends in the last axis) but does not parse."""
    found = []
    for p in Path(root).rglob(f"{NAMES[-1]}=*"):
        rel = p.relative_to(root)
        if p.is_dir() and not any(s.startswith(("_", ".")) for s in rel.parts):
            found.append((CellKey.from_rel(rel), p))
    for key, p in sorted(found, key=lambda kp: kp[0]):
        yield p, key
