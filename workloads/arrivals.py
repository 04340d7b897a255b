"""Arrival processes. Poisson at rate ``jps``: exponential gaps, the first job at t=0."""

from __future__ import annotations

import numpy as np


def poisson(rng: np.random.Generator, jps: float, n: int) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of rate ``jps``; the first at 0."""
    if not jps > 0:
        raise ValueError(f"jps must be a positive number, got {jps!r}")
    gaps = rng.exponential(1.0 / jps, size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)
