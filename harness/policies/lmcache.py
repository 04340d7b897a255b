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
import re
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

    def write_through_gib(self, cfg) -> float | None:
        return float(lmcache_config(cfg)["max_local_cpu_size"])

    def log_counts(self, cfg, log: str) -> dict[str, float] | None:
        counts = log_counts(log, lmcache_config(cfg)["chunk_size"])
        return counts if counts["lookups"] or counts["stores"] else None

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


# LMCache 0.5.3 exports its counters to a Prometheus registry of the engine-core process that
# vLLM's /metrics does not serve, so a cell reads them from LMCache's INFO lines instead (the
# formats of lmcache/integration/vllm/vllm_v1_adapter.py and lmcache/v1/cache_engine.py):
# the scheduler's lookup of each request, each store and each retrieve, and the CPU backend's
# allocation failures (each one an eviction: LMCache evicts after a failed first attempt).
_LOOKUP = re.compile(r"Reqid: \S+, Total tokens (\d+), Inference Engine computed tokens: (\d+), "
                     r"LMCache hit tokens: (\d+), need to load: (\d+)")
_STORE = re.compile(r"\] Stored (\d+) out of total \d+ tokens\. "
                    r"size: ([\d.]+) GB, cost ([\d.]+) ms")
_RETRIEVE = re.compile(r"\] Retrieved (\d+) out of \d+ (?:required tokens \(from \d+ total tokens\)"
                       r"\. size: ([\d.]+) gb, cost ([\d.]+) ms|out of total \d+ tokens)")
_ALLOC_FAILED = "Failed to allocate memory block"
_NO_EVICTION = "No eviction candidates found"
GIB = 1024**3  # LMCache prints sizes in GiB (tot_kv_size / 1024**3), labelled "GB"


def log_counts(log: str, chunk_size: int = 256) -> dict[str, float]:
    """LMCache's own account of a cell, from its log lines (a cell's slice of the server log).

    Per lookup (one per request, in the scheduler): the request's tokens, the tokens the engine
    already held in VRAM, the tokens LMCache found (a prefix: its lookup stops at the first
    chunk it lacks) and the tokens it had to load. ``lookups_lost`` counts the lookups where
    the engine held at least one chunk of prefix and LMCache found none of it: the tier had
    lost the request's first chunk, which hides every later chunk it still holds.
    ``lookups_below_engine`` counts those where LMCache held at least a chunk less than VRAM,
    ``lookups_above_engine`` those where it held more (the only ones it can serve).
    Stores and retrieves: tokens, bytes, seconds (the seconds are on the engine's step).
    ``evictions`` counts the CPU backend's failed first allocations (each is followed by an
    LRU eviction), ``eviction_waits`` the times it found nothing it could evict and slept.
    ``bytes_offload`` / ``bytes_onload`` are the bytes stored / retrieved, for the analysis.
    """
    c = dict.fromkeys(
        ("lookups", "tokens_looked_up", "tokens_engine_had", "tokens_hit", "tokens_to_load",
         "lookups_lost", "lookups_below_engine", "lookups_above_engine", "stores",
         "tokens_stored", "bytes_stored", "store_s", "retrieves", "tokens_retrieved",
         "bytes_retrieved", "retrieve_s", "evictions", "eviction_waits"), 0.0)
    sized_tokens = 0.0  # retrieved tokens whose line gave their size
    for line in log.splitlines():
        if "LMCache" not in line and "Reqid" not in line:
            continue
        if m := _LOOKUP.search(line):
            total, had, hit, load = map(int, m.groups())
            c["lookups"] += 1
            c["tokens_looked_up"] += total
            c["tokens_engine_had"] += had
            c["tokens_hit"] += hit
            c["tokens_to_load"] += load
            c["lookups_lost"] += had >= chunk_size and hit == 0
            c["lookups_below_engine"] += hit + chunk_size <= had
            c["lookups_above_engine"] += hit > had
        elif m := _STORE.search(line):
            c["stores"] += 1
            c["tokens_stored"] += int(m[1])
            c["bytes_stored"] += float(m[2]) * GIB
            c["store_s"] += float(m[3]) / 1000
        elif m := _RETRIEVE.search(line):
            c["retrieves"] += 1
            c["tokens_retrieved"] += int(m[1])
            if m[2] is not None:
                sized_tokens += int(m[1])
                c["bytes_retrieved"] += float(m[2]) * GIB
                c["retrieve_s"] += float(m[3]) / 1000
        elif _ALLOC_FAILED in line:
            c["evictions"] += 1
        elif _NO_EVICTION in line:
            c["eviction_waits"] += 1
    unsized = c["tokens_retrieved"] - sized_tokens
    if unsized and c["tokens_stored"]:  # the layerwise format gives no size: a stored token's
        c["bytes_retrieved"] += unsized * c["bytes_stored"] / c["tokens_stored"]
    c["bytes_offload"], c["bytes_onload"] = c["bytes_stored"], c["bytes_retrieved"]
    return c
