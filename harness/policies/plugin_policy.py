"""Shared seam for our own plugin policies (``harness.plugins``): the server loads a KV
connector through ``--kv-transfer-config`` with ``kv_connector_module_path``.

The plugin modules import vLLM; their settings schemas (``harness.plugins.schemas``) do not,
so settings are validated at planning time anywhere, a login node included, and again by the
connector when the server loads it.
"""

from __future__ import annotations

import logging

from harness.errors import ConfigError
from harness.plugins.schemas import SCHEMAS
from harness.plugins.settings import SettingsError, kv_transfer_args, plugin_env, resolve
from harness.policies.base import Policy

log = logging.getLogger(__name__)

STATS_DIR = "."  # the server runs in the cell folder: the JSON snapshot lands there


class PluginPolicy(Policy):
    connector = ""
    module = ""

    def settings(self, cfg) -> dict:
        s = {str(k): v for k, v in cfg.policy.settings.items()}
        s.setdefault("stats_dir", STATS_DIR)
        return s

    def server_args(self, cfg) -> list[str]:
        return kv_transfer_args(self.connector, self.module, self.settings(cfg)) + super().server_args(cfg)

    def server_env(self, cfg) -> dict[str, str]:
        env = plugin_env(self.settings(cfg)["stats_dir"])
        env.pop("PYTHONPATH", None)  # harness.server puts the repo on PYTHONPATH already
        return {**env, **super().server_env(cfg)}

    def validate(self, cfg) -> None:
        super().validate(cfg)
        try:
            resolve(self.name, SCHEMAS[self.name], self.settings(cfg))
        except SettingsError as e:
            raise ConfigError(f"policy.settings: {e}") from None
