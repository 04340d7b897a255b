"""``continuum_ttl``: Continuum-style TTL pinning as a KV-connector plugin for mainline vLLM
(``harness.plugins.continuum_ttl``; see docs/policies/continuum_ttl.md). Both engines."""

from __future__ import annotations

from dataclasses import dataclass

from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy, PluginSettings
from harness.policies.settings import setting

TTL_RULES = ("fixed", "running_mean")  # the plugin checks that its rule registry matches


@dataclass(frozen=True)
class ContinuumTtlSettings(PluginSettings):
    ttl_s: float = setting(
        2.0, "TTL (s) for fixed; running_mean's TTL before any observation")
    ttl_rule: str = setting(
        "fixed", "how the TTL is chosen: fixed, or running_mean (ttl_scale x the mean gap "
        "seen after the tool, as Continuum's public code)", choices=TTL_RULES)
    ttl_scale: float = setting(1.5, "running_mean multiplier")
    ttl_max_s: float = setting(60.0, "upper bound on any TTL (s)")
    min_free_frac: float = setting(
        0.0, "release the oldest pins whenever free blocks < this x the pool")


@register
class ContinuumTtl(PluginPolicy):
    name = "continuum_ttl"
    connector = "ContinuumTTLConnector"
    module = "harness.plugins.continuum_ttl"
    settings_type = ContinuumTtlSettings
