"""``predictive_prefetch``: offload a job's KV to a host tier during its tool call and bring
it back ``lead_s`` before the predicted return (``harness.plugins.predictive_prefetch``; see
docs/policies/predictive_prefetch.md). The host tier is sized from ``dram`` unless the
settings give ``host_tier_gb``, which may not exceed it. Both engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.plugins import predictors
from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy, PluginSettings
from harness.policies.settings import setting


@dataclass(frozen=True)
class PredictivePrefetchSettings(PluginSettings):
    # 0.2 s is what every recorded run used (H100 validation 2026-11-27, cpu_kv_pressure).
    lead_s: float = setting(0.2, "start the prefetch this long before the predicted return (s)")
    predictor: str = setting(
        "oracle", "tool-time predictor (harness.plugins.predictors registry)",
        choices=lambda: tuple(predictors.PREDICTORS))
    host_tier_gb: float | None = setting(
        None, "host tier size (GiB); null: all of dram.gb (the launcher fills it in; the "
        "connector needs a number)")
    link_gb_s: float = setting(
        0.0, "emulated host->VRAM bandwidth (GB/s) a prefetch waits out; 0 = none")
    hold_s: float = setting(
        30.0, "hold prefetched KV this long past the predicted return, then release it")
    late_load: bool = setting(
        True, "a turn that arrives before its prefetch landed loads the rest from the host tier")

    def check(self, policy: str) -> None:
        if self.host_tier_gb is not None and self.host_tier_gb <= 0:
            raise ConfigError(
                f"policy.settings.host_tier_gb={self.host_tier_gb:g} is not a positive number "
                f"of GiB; set it to at most dram.gb, or null for all of it"
            )


@register
class PredictivePrefetch(PluginPolicy):
    name = "predictive_prefetch"
    connector = "PredictivePrefetchConnector"
    module = "harness.plugins.predictive_prefetch"
    settings_type = PredictivePrefetchSettings

    def settings(self, cfg) -> Any:
        s = super().settings(cfg)
        return s if s.host_tier_gb is not None else s.replace(host_tier_gb=float(cfg.dram.gb))

    def validate(self, cfg) -> None:
        super().validate(cfg)
        tier = self.settings(cfg).host_tier_gb
        if tier > cfg.dram.gb:
            raise ConfigError(
                f"policy.settings.host_tier_gb={tier:g} exceeds dram={cfg.dram.gb} GB; "
                f"lower it or choose a larger dram"
            )
