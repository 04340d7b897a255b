"""``native_offload``: vLLM's own CPU KV offloading (the seed's "SimpleCPUOffloading", phase 1).

For the pinned CUDA engine (vllm==0.26.0) the server gets one flag::

    --kv-transfer-config '{"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
                           "kv_connector_extra_config": {"cpu_bytes_to_use": <dram GiB * 2**30>,
                                                         "eviction_policy": "lru"}}'

vLLM 0.26 also has ``--kv-offloading-size <GiB>`` (``--kv-offloading-backend native`` is its
default). That flag is only sugar for the same config (``vllm/config/vllm.py``,
``_post_init_kv_transfer_config``), but it picks the connector class from the environment
(``VLLM_USE_SIMPLE_KV_OFFLOAD``: SimpleCPUOffloadConnector, else OffloadingConnector) and cannot
carry the connector's other knobs (``eviction_policy``, ``block_size``, ``store_threshold``).
The explicit config names the class in the command line, so the manifest shows what ran, and
it is the same mechanism as every other connector policy here.

The CPU engine is refused at planning: vLLM's OffloadingConnector raises "CPU Offloading is
currently only supported on CUDA-alike and XPU GPUs" on the CPU backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.policies import common
from harness.policies.base import Policy, register
from harness.policies.settings import Settings, setting

CONNECTORS = ("OffloadingConnector", "SimpleCPUOffloadConnector")
EVICTION = ("lru", "arc")  # vllm/v1/kv_offload/cpu/manager.py (OffloadingConnector only)
OWNED = {"cpu_bytes_to_use": "dram / policy.settings.offload_gb",
         "eviction_policy": "policy.settings.eviction_policy"}  # fmt: skip


@dataclass(frozen=True)
class NativeOffloadSettings(Settings):
    offload_gb: float | None = setting(
        None, "GiB of the host tier; null: all of dram.gb (more is refused at planning)")
    connector: str = setting(
        "OffloadingConnector", "vLLM's connector class (what --kv-offloading-size picks)",
        choices=CONNECTORS)
    eviction_policy: str = setting(
        "lru", "the CPU tier's eviction (OffloadingConnector only)", choices=EVICTION)
    extra_config: dict[str, Any] = setting(
        {}, "more kv_connector_extra_config keys, passed as they are")

    def check(self, policy: str) -> None:
        if self.connector != "OffloadingConnector" and self.eviction_policy != "lru":
            raise ConfigError(
                f"policy.settings.eviction_policy={self.eviction_policy} applies to "
                f"OffloadingConnector only; {self.connector} evicts LRU: remove the setting"
            )
        common.not_owned(policy, "extra_config", self.extra_config, OWNED)


@register
class NativeOffload(Policy):
    name = "native_offload"
    engine_reason = "vLLM's OffloadingConnector refuses the CPU backend"
    settings_type = NativeOffloadSettings

    def implementation(self, cfg) -> str:
        conf = transfer_config(cfg)
        gib = conf["kv_connector_extra_config"].get("cpu_bytes_to_use", 0) / 2**30
        tier = f", {gib:g} GiB CPU tier" if gib else ""
        return f"vLLM's own {conf['kv_connector']}{tier}, on {self._engine(cfg)}"

    def server_args(self, cfg) -> list[str]:
        return ["--kv-transfer-config", json.dumps(transfer_config(cfg))] + super().server_args(cfg)

    def write_through_gib(self, cfg) -> float | None:
        extra = transfer_config(cfg)["kv_connector_extra_config"]
        return extra.get("cpu_bytes_to_use", 0) / common.GIB or None

    def validate(self, cfg) -> None:
        super().validate(cfg)
        transfer_config(cfg)


def transfer_config(cfg) -> dict[str, Any]:
    """The ``--kv-transfer-config`` of the cell: connector, role and the tier's bytes."""
    s: NativeOffloadSettings = NativeOffload().settings(cfg)
    tier_gib = common.offload_gib(cfg, s.offload_gb)
    extra: dict[str, Any] = {"cpu_bytes_to_use": int(tier_gib * common.GIB)}
    if s.connector == "OffloadingConnector":
        extra["eviction_policy"] = s.eviction_policy
    extra.update(s.extra_config)
    return {
        "kv_connector": s.connector,
        "kv_role": "kv_both",
        "kv_connector_extra_config": extra,
    }
