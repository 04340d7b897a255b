"""``predictive_prefetch``: offload a job's KV to a host tier during its tool call and bring
it back ``lead_s`` before the predicted return (``harness.plugins.predictive_prefetch``; see
docs/policies/predictive_prefetch.md). The host tier is sized from ``dram`` unless the
settings give ``host_tier_gb``, which may not exceed it. Both engines."""

from harness.errors import ConfigError
from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy


@register
class PredictivePrefetch(PluginPolicy):
    name = "predictive_prefetch"
    connector = "PredictivePrefetchConnector"
    module = "harness.plugins.predictive_prefetch"

    def settings(self, cfg) -> dict:
        s = super().settings(cfg)
        s.setdefault("host_tier_gb", float(cfg.dram.gb))
        return s

    def validate(self, cfg) -> None:
        tier = float(self.settings(cfg)["host_tier_gb"])
        if tier > cfg.dram.gb:
            raise ConfigError(
                f"policy.settings.host_tier_gb={tier:g} exceeds dram={cfg.dram.gb} GB; "
                f"lower it or choose a larger dram"
            )
        super().validate(cfg)
