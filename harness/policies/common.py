"""Helpers the policy modules share: the offload tier's budget and owned mapping keys.

``cfg.dram.gb`` is the offload tier's host-memory budget (see ``DramConf``). It is read as
GiB, the unit of both vLLM's ``--kv-offloading-size`` / ``cpu_bytes_to_use`` and LMCache's
``max_local_cpu_size``, and of SLURM's ``--mem=<n>G`` (1024-based), which asks for the same
``dram.gb`` plus the cluster's reserve: the tier can never outgrow what the job was given.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError

GIB = 1 << 30


def offload_gib(cfg, want: float | None, key: str = "offload_gb") -> float:
    """The tier's size in GiB: ``want`` if set, else all of ``dram.gb``; never more."""
    dram = float(cfg.dram.gb)
    if want is None:
        return dram
    if want <= 0:
        raise ConfigError(
            f"policy.settings.{key}={want:g} is not a positive number of GiB; "
            f"set it to at most dram={cfg.dram.gb}, or null for all of it"
        )
    if want > dram:
        raise ConfigError(
            f"policy.settings.{key}={want:g} is larger than dram={cfg.dram.gb} (the offload "
            f"tier's budget, dram.gb); lower policy.settings.{key} or choose a larger dram"
        )
    return float(want)


def not_owned(policy: str, key: str, value: dict[str, Any], owned: dict[str, str]) -> None:
    """Refuse keys of the mapping setting ``key`` that other settings own
    (``owned``: key -> where kvbench takes its value from)."""
    taken = sorted(set(value) & set(owned))
    if taken:
        raise ConfigError(
            f"policy.settings.{key}.{taken[0]} is set by kvbench from {owned[taken[0]]}; "
            f"remove it from policy.settings.{key} for policy={policy}"
        )
