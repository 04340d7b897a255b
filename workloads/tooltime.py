"""Tool-time distributions, one class per kind, chosen by ``workload.tool.dist``.

Register another kind in ``KINDS`` (and add it to ``launch.schema.ToolDist``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workloads.errors import WorkloadError
from workloads.paths import resolve


class ToolTime(Protocol):
    def draw(self, rng: np.random.Generator, n: int) -> list[float]: ...


def _mean(conf: Any, positive: bool) -> float:
    m = float(conf.mean_s)
    if not math.isfinite(m) or m < 0 or (positive and m == 0):
        need = "a positive" if positive else "a non-negative"
        raise WorkloadError(f"workload.tool.mean_s={conf.mean_s}: must be {need} number of seconds")
    return m


class Fixed:
    def __init__(self, conf: Any) -> None:
        self.value = _mean(conf, positive=False)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return [self.value] * n


class Exponential:
    def __init__(self, conf: Any) -> None:
        self.mean = _mean(conf, positive=True)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return rng.exponential(self.mean, n).tolist()


class LogNormal:
    """Log-normal with the given mean (not median) and shape ``sigma``."""

    def __init__(self, conf: Any) -> None:
        self.sigma = float(conf.sigma)
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise WorkloadError(f"workload.tool.sigma={conf.sigma}: must be a non-negative shape")
        self.mu = float(np.log(_mean(conf, positive=True)) - self.sigma**2 / 2)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return rng.lognormal(self.mu, self.sigma, n).tolist()


class FromFile:
    """Per-turn values from a file (one number per line), cycled across jobs. A relative path
    is from the repository root (as ``model.path``)."""

    def __init__(self, conf: Any) -> None:
        if not conf.file:
            raise WorkloadError(
                "workload.tool.file=null: must name a file (one number per line) when "
                "workload.tool.dist=file"
            )
        path = resolve(conf.file)
        try:
            text = Path(path).read_text().split()
        except OSError as e:
            raise WorkloadError(
                f"workload.tool.file={conf.file}: cannot read it ({e.strerror}: {path})"
            ) from None
        try:
            self.values = [float(x) for x in text]
        except ValueError as e:
            raise WorkloadError(f"workload.tool.file={conf.file}: {e}") from None
        if not self.values:
            raise WorkloadError(f"workload.tool.file={conf.file}: holds no numbers")
        if not all(math.isfinite(v) and v >= 0 for v in self.values):
            raise WorkloadError(
                f"workload.tool.file={conf.file}: holds a negative or non-finite time"
            )
        self.pos = 0

    def draw(self, rng: np.random.Generator | None, n: int) -> list[float]:
        out = [self.values[(self.pos + i) % len(self.values)] for i in range(n)]
        self.pos += n
        return out


KINDS: dict[str, type] = {
    "fixed": Fixed,
    "exponential": Exponential,
    "lognormal": LogNormal,
    "file": FromFile,
}


def make(conf: Any) -> ToolTime:
    """The tool-time distribution of ``conf`` (a ToolTimeConf or its DictConfig)."""
    try:
        kind = KINDS[str(conf.dist)]
    except KeyError:
        raise WorkloadError(
            f"workload.tool.dist={conf.dist} is unknown; allowed: {', '.join(KINDS)}"
        ) from None
    out: ToolTime = kind(conf)
    return out
