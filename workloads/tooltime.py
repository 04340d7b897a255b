"""Tool-time distributions, one class per kind, chosen by ``workload.tool.dist``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class ToolTime(Protocol):
    def draw(self, rng: np.random.Generator, n: int) -> list[float]: ...


class Fixed:
    def __init__(self, conf) -> None:
        self.value = float(conf.mean_s)

    def draw(self, rng, n):
        return [self.value] * n


class Exponential:
    def __init__(self, conf) -> None:
        self.mean = float(conf.mean_s)

    def draw(self, rng, n):
        return rng.exponential(self.mean, n).tolist()


class LogNormal:
    """Log-normal with the given mean (not median) and shape ``sigma``."""

    def __init__(self, conf) -> None:
        self.sigma = float(conf.sigma)
        self.mu = float(np.log(conf.mean_s) - self.sigma**2 / 2)

    def draw(self, rng, n):
        return rng.lognormal(self.mu, self.sigma, n).tolist()


class FromFile:
    """Per-turn values from a file (one number per line), cycled across jobs."""

    def __init__(self, conf) -> None:
        if not conf.file:
            raise ValueError("workload.tool.file must name a file when workload.tool.dist=file")
        text = Path(conf.file).read_text().split()
        self.values = [float(x) for x in text]
        if not self.values:
            raise ValueError(f"workload.tool.file {conf.file} holds no numbers")
        self.pos = 0

    def draw(self, rng, n):
        out = [self.values[(self.pos + i) % len(self.values)] for i in range(n)]
        self.pos += n
        return out


KINDS: dict[str, type] = {
    "fixed": Fixed,
    "exponential": Exponential,
    "lognormal": LogNormal,
    "file": FromFile,
}


def make(conf) -> ToolTime:
    try:
        kind = KINDS[conf.dist]
    except KeyError:
        raise ValueError(
            f"workload.tool.dist={conf.dist!r} is unknown; allowed: {', '.join(KINDS)}"
        ) from None
    return kind(conf)
