"""kvbench's own KV policies as plugins that mainline vLLM loads (no fork).

Each policy is one module exposing the same seam, so a registry can treat them alike::

    module = POLICIES[name]                # "continuum_ttl" | "predictive_prefetch"
    argv += module.server_args(settings)    # the --kv-transfer-config that loads it
    env.update(module.server_env(settings)) # PYTHONPATH (+ KVBENCH_PLUGIN_STATS_DIR)

Both are KV connectors (``kv_connector_module_path``) built on ``connector.PolicyConnector``;
supported vLLM releases are listed in ``compat.SUPPORTED_VLLM`` and checked at import.
Importing a policy module imports vLLM; this package's ``__init__`` does not.
"""

from __future__ import annotations

import importlib
from types import ModuleType

POLICIES = {
    "continuum_ttl": "harness.plugins.continuum_ttl",
    "predictive_prefetch": "harness.plugins.predictive_prefetch",
}


def policy_module(name: str) -> ModuleType:
    """The plugin module of a policy; unknown names raise with the known ones."""
    try:
        return importlib.import_module(POLICIES[name])
    except KeyError:
        raise ValueError(f"unknown plugin policy {name!r}; known: {sorted(POLICIES)}") from None
