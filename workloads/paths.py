"""Where a workload file named in a config lies: an absolute path as it is, a relative one
from the repository root (as ``model.path``), so planning and the node agree."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p
