"""kvbench's own KV policies as plugins that mainline vLLM loads (no fork).

Each is a policy class in ``harness.policies`` (a ``PluginPolicy``: its connector class, the
plugin module vLLM imports, its settings dataclass) and one module here with the same seam::

    module = policy_module(name)             # "continuum_ttl" | "predictive_prefetch"
    argv += module.server_args(settings)     # the --kv-transfer-config that loads it
    env.update(module.server_env(settings))  # PYTHONPATH (+ KVBENCH_PLUGIN_STATS_DIR)

The name -> module lookup (:func:`modules`, also ``POLICIES``) is derived from the policy
registry, not kept here. Both are KV connectors (``kv_connector_module_path``) built on
``connector.PolicyConnector``; supported vLLM releases are listed in ``compat.SUPPORTED_VLLM``
and checked at import. Importing a policy module imports vLLM; this package's ``__init__``
does not (nor does :func:`modules`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def modules() -> dict[str, str]:
    """Plugin policy name -> its plugin module, from the policy classes."""
    from harness.policies import classes
    from harness.policies.plugin_policy import PluginPolicy

    return {n: c.module for n, c in classes().items() if issubclass(c, PluginPolicy)}


def policy_module(name: str) -> ModuleType:
    """The plugin module of a policy; unknown names raise with the known ones."""
    known = modules()
    if name not in known:
        raise ValueError(f"unknown plugin policy {name!r}; known: {sorted(known)}")
    return importlib.import_module(known[name])


def __getattr__(name: str) -> Any:
    if name == "POLICIES":  # computed: the registry is the one source
        return modules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
