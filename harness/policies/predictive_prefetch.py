"""``predictive_prefetch``: offload a job's KV to a host tier during its tool call and bring
it back ``lead_s`` before the predicted return (``harness.plugins.predictive_prefetch``; see
docs/policies/predictive_prefetch.md). The host tier is sized from ``dram`` unless the
settings give ``host_tier_gb``, which may not exceed it. Both engines.

The tool-time predictor's settings (``predictor``, ``fixed_s``, ``quantile``,
``min_samples``, ``learn_rate``; ``harness.plugins.predictors``) are fields here, so
``predictive_scored``, whose settings extend these, shares them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.plugins import predictors
from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy, PluginSettings
from harness.policies.settings import setting, show


@dataclass(frozen=True)
class PredictivePrefetchSettings(PluginSettings):
    # 0.2 s is what every recorded run used (H100 validation 2026-11-27, cpu_kv_pressure).
    lead_s: float = setting(0.2, "start the prefetch this long before the predicted return (s)")
    predictor: str = setting(
        "oracle", "tool-time predictor (harness.plugins.predictors registry): oracle, fixed, "
        "mean, quantile or learned", choices=lambda: tuple(predictors.PREDICTORS))
    fixed_s: float = setting(
        2.0, "the fixed predictor's gap (s); mean, quantile and learned predict it until "
        "min_samples gaps were seen")
    quantile: float = setting(
        0.5, "quantile and learned: which quantile of the gaps to predict (0.5: the median)")
    min_samples: int = setting(
        10, "mean, quantile, learned: gaps a tool needs before its own estimate is used (else "
        "all tools' together, else fixed_s)")
    learn_rate: float = setting(
        0.05, "learned: weight of each new gap in the exponentially weighted log-normal fit "
        "(it forgets an old regime after about 1/learn_rate gaps)")
    host_tier_gb: float | None = setting(
        None, "host tier size (GiB); null: all of dram.gb (the launcher fills it in; the "
        "connector needs a number)")
    link_gb_s: float = setting(
        0.0, "emulated host->VRAM bandwidth (GB/s) a prefetch waits out; 0 = none")
    hold_s: float = setting(
        30.0, "this long past the (first) predicted return, let go of a job's KV still held "
        "or on the host tier (the job is presumed gone)")
    late_load: bool = setting(
        True, "a turn that arrives before its prefetch landed loads the rest from the host tier")

    def check(self, policy: str) -> None:
        if self.host_tier_gb is not None and self.host_tier_gb <= 0:
            raise ConfigError(
                f"policy.settings.host_tier_gb={self.host_tier_gb:g} is not a positive number "
                f"of GiB; set it to at most dram.gb, or null for all of it"
            )
        rules = [("fixed_s", self.fixed_s >= 0, "a number of seconds >= 0"),
                 ("quantile", 0 < self.quantile < 1, "0 < quantile < 1"),
                 ("min_samples", self.min_samples >= 1, "a whole number >= 1"),
                 ("learn_rate", 0 < self.learn_rate <= 1, "0 < learn_rate <= 1")]
        for key, ok, allowed in rules:
            if not ok:
                out_of_range(policy, key, getattr(self, key), allowed)


def out_of_range(policy: str, key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"policy.settings.{key}={show(value)} is out of range for "
                      f"policy={policy}; allowed: {allowed}")


@register
class PredictivePrefetch(PluginPolicy):
    name = "predictive_prefetch"
    connector = "PredictivePrefetchConnector"
    module = "harness.plugins.predictive_prefetch"
    settings_type = PredictivePrefetchSettings

    def settings(self, cfg) -> Any:
        s = super().settings(cfg)
        return s if s.host_tier_gb is not None else s.replace(host_tier_gb=float(cfg.dram.gb))

    def implementation(self, cfg) -> str:
        return (f"kvbench's {self.connector} ({self.module}, predictor "
                f"{self.settings(cfg).predictor}), on {self._engine(cfg)}")

    def validate(self, cfg) -> None:
        super().validate(cfg)
        tier = self.settings(cfg).host_tier_gb
        if tier > cfg.dram.gb:
            raise ConfigError(
                f"policy.settings.host_tier_gb={tier:g} exceeds dram={cfg.dram.gb} GB; "
                f"lower it or choose a larger dram"
            )
