"""Helpers the policy modules share: their settings, and the offload tier's budget.

``cfg.dram.gb`` is the offload tier's host-memory budget (see ``DramConf``). It is read as
GiB, the unit of both vLLM's ``--kv-offloading-size`` / ``cpu_bytes_to_use`` and LMCache's
``max_local_cpu_size``, and of SLURM's ``--mem=<n>G`` (1024-based), which asks for the same
``dram.gb`` plus the cluster's reserve: the tier can never outgrow what the job was given.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

GIB = 1 << 30


def settings(cfg, defaults: dict[str, Any]) -> dict[str, Any]:
    """The policy's settings over ``defaults``; an unknown key raises with the known ones."""
    raw = cfg.policy.settings
    plain = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
    given: dict[str, Any] = dict(plain or {})  # type: ignore[arg-type]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"policy.settings.{unknown[0]} is unknown for policy={cfg.policy.name}; "
            f"known: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


def offload_gib(cfg, s: dict[str, Any]) -> float:
    """The tier's size in GiB: ``offload_gb`` if set, else all of ``dram.gb``; never more."""
    dram = float(cfg.dram.gb)
    want = s.get("offload_gb")
    if want is None:
        return dram
    if isinstance(want, bool) or not isinstance(want, int | float) or want <= 0:
        raise ConfigError(
            f"policy.settings.offload_gb={want} is not a positive number of GiB; "
            f"set it to at most dram={cfg.dram.gb}, or null for all of it"
        )
    if want > dram:
        raise ConfigError(
            f"policy.settings.offload_gb={want} is larger than dram={cfg.dram.gb} (the offload "
            f"tier's budget, dram.gb); lower policy.settings.offload_gb or choose a larger dram"
        )
    return float(want)


def one_of(cfg, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"policy.settings.{key}={value} is not allowed for policy={cfg.policy.name}; "
            f"allowed: {', '.join(allowed)}"
        )


def mapping(cfg, key: str, value: Any, reserved: dict[str, str] | None = None) -> dict[str, Any]:
    """A settings value that must be a mapping, without the keys that other settings own
    (``reserved``: key -> the setting it comes from)."""
    if not isinstance(value, dict):
        raise ConfigError(f"policy.settings.{key} must be a mapping (key: value), not {value!r}")
    reserved = reserved or {}
    taken = sorted(set(value) & set(reserved))
    if taken:
        raise ConfigError(
            f"policy.settings.{key}.{taken[0]} is set by kvbench from {reserved[taken[0]]}; "
            f"remove it from policy.settings.{key} for policy={cfg.policy.name}"
        )
    return value
