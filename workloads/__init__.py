"""Deterministic agent workloads: arrivals, turns, tool outputs and tool times from a seed."""

from workloads.agent import JobSpec, Workload, generate
from workloads.io import load, save

__all__ = ["JobSpec", "Workload", "generate", "load", "save"]
