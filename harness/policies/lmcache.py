"""``lmcache``: LMCache's vLLM connector with its local CPU backend sized from ``dram``.

The server gets ``--kv-transfer-config '{"kv_connector": "LMCacheConnectorV1", "kv_role":
"kv_both"}'`` (vLLM 0.26 imports ``lmcache.integration.vllm.vllm_v1_adapter`` for it) and the
environment

- ``LMCACHE_CONFIG_FILE=lmcache.yaml``: the file :meth:`LMCache.files` writes into the cell
  folder, the server's working directory (a relative path: the folder is not known when the
  command is built). LMCache reads it once per process (``lmcache_get_or_create_config``),
  then lets ``LMCACHE_*`` variables override it, so ``policy.env`` may not set those keys.
- ``LMCACHE_TRACK_USAGE=false``: no usage telemetry from compute nodes.
- ``PYTHONHASHSEED=0``: LMCache falls back to Python's ``hash`` for token chunks when it cannot
  load vLLM's, and the scheduler and worker processes must agree on it.

Config keys are those of LMCache 0.5.3 (``lmcache/v1/config.py``), the newest release whose
compiled extension loads with torch 2.11 (vLLM 0.26's pin). ``max_local_cpu_size`` is GiB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.policies import common
from harness.policies.base import Policy, register
from harness.policies.settings import Settings, setting

CONFIG_FILE = "lmcache.yaml"
OWNED = {
    "chunk_size": "policy.settings.chunk_size",
    "local_cpu": "the policy (always true: the tier under test)",
    "max_local_cpu_size": "dram / policy.settings.offload_gb",
}
ENV_OWNED = {f"LMCACHE_{k.upper()}" for k in OWNED} | {"LMCACHE_CONFIG_FILE"}


@dataclass(frozen=True)
class LMCacheSettings(Settings):
    offload_gb: float | None = setting(
        None, "GiB of LMCache's local CPU backend (max_local_cpu_size); null: all of dram.gb")
    chunk_size: int = setting(256, "tokens per LMCache chunk (LMCache's default)")
    config: dict[str, Any] = setting(
        {}, "more LMCache config keys, written to lmcache.yaml as they are")

    def check(self, policy: str) -> None:
        if self.chunk_size <= 0:
            raise ConfigError(
                f"policy.settings.chunk_size={self.chunk_size} must be a positive whole number "
                f"of tokens"
            )
        common.not_owned(policy, "config", self.config, OWNED)


@register
class LMCache(Policy):
    name = "lmcache"
    engine_reason = "LMCache's connector needs CUDA"
    settings_type = LMCacheSettings

    def server_args(self, cfg) -> list[str]:
        conf = {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
        return ["--kv-transfer-config", json.dumps(conf)] + super().server_args(cfg)

    def server_env(self, cfg) -> dict[str, str]:
        env = {
            "LMCACHE_CONFIG_FILE": CONFIG_FILE,
            "LMCACHE_TRACK_USAGE": "false",
            "PYTHONHASHSEED": "0",
        }
        return {**env, **super().server_env(cfg)}

    def files(self, cfg) -> dict[str, str]:
        return {CONFIG_FILE: config_text(cfg)}

    def implementation(self, cfg) -> str:
        size = lmcache_config(cfg)["max_local_cpu_size"]
        return f"LMCache's LMCacheConnectorV1, {size} GB local CPU backend, on {self._engine(cfg)}"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        config_text(cfg)
        clash = sorted(ENV_OWNED & set(cfg.policy.env))
        if clash:
            raise ConfigError(
                f"policy.env.{clash[0]} would override kvbench's LMCache config file; set the "
                f"value through policy.settings (chunk_size, offload_gb, config) instead"
            )


def lmcache_config(cfg) -> dict[str, Any]:
    """What LMCache is configured with: chunk size, the local CPU backend and its size."""
    s: LMCacheSettings = LMCache().settings(cfg)
    size = common.offload_gib(cfg, s.offload_gb)
    conf = {
        "chunk_size": s.chunk_size,
        "local_cpu": True,
        "max_local_cpu_size": int(size) if size.is_integer() else size,
    }
    return {**conf, **s.config}


def config_text(cfg) -> str:
    head = (
        "# LMCache configuration of this cell, written by kvbench (harness/policies/lmcache.py)\n"
        "# from policy.settings and dram (both in manifest.json). max_local_cpu_size is GiB.\n"
    )
    return head + yaml.safe_dump(lmcache_config(cfg), sort_keys=False)
