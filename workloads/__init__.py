"""Deterministic agent workloads: arrivals, turns, tool outputs and tool times from a seed.

``build(cfg)`` makes a cell's jobs from its config. This package imports neither ``harness``
nor ``launch`` (launch -> harness -> workloads, never back); its errors are WorkloadError.
"""

from workloads.agent import JobSpec, Workload, generate
from workloads.errors import WorkloadError
from workloads.io import load, save
from workloads.sources import SOURCES, build

__all__ = ["SOURCES", "JobSpec", "Workload", "WorkloadError", "build", "generate", "load", "save"]
