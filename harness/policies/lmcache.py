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
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.policies import common
from harness.policies.base import Policy, register

CONFIG_FILE = "lmcache.yaml"
DEFAULTS: dict[str, Any] = {
    "offload_gb": None,  # GiB of the local CPU backend; None: all of dram.gb
    "chunk_size": 256,  # tokens per LMCache chunk (its default)
    "config": {},  # more LMCache config keys, written to the file as they are
}
OWNED = {
    "chunk_size": "policy.settings.chunk_size",
    "local_cpu": "the policy (always true: the tier under test)",
    "max_local_cpu_size": "dram / policy.settings.offload_gb",
}
ENV_OWNED = {f"LMCACHE_{k.upper()}" for k in OWNED} | {"LMCACHE_CONFIG_FILE"}


@register
class LMCache(Policy):
    name = "lmcache"
    engine_reason = "LMCache's connector needs CUDA"

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
    s = common.settings(cfg, DEFAULTS)
    chunk = s["chunk_size"]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ConfigError(
            f"policy.settings.chunk_size={chunk} must be a positive whole number of tokens"
        )
    size = common.offload_gib(cfg, s)
    conf = {
        "chunk_size": chunk,
        "local_cpu": True,
        "max_local_cpu_size": int(size) if size.is_integer() else size,
    }
    return {**conf, **common.mapping(cfg, "config", s["config"], OWNED)}


def config_text(cfg) -> str:
    head = (
        "# LMCache configuration of this cell, written by kvbench (harness/policies/lmcache.py)\n"
        "# from policy.settings and dram (both in manifest.json). max_local_cpu_size is GiB.\n"
    )
    return head + yaml.safe_dump(lmcache_config(cfg), sort_keys=False)
