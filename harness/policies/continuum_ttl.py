"""``continuum_ttl``: Continuum-style TTL pinning as a KV-connector plugin for mainline vLLM
(``harness.plugins.continuum_ttl``; see docs/policies/continuum_ttl.md). Both engines."""

from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy


@register
class ContinuumTtl(PluginPolicy):
    name = "continuum_ttl"
    connector = "ContinuumTTLConnector"
    module = "harness.plugins.continuum_ttl"
