"""Shared seam for our own plugin policies (``harness.plugins``): the server loads a KV
connector through ``--kv-transfer-config`` with ``kv_connector_module_path``.

A plugin policy class names its connector class and module here, and its settings type; the
plugin module (which imports vLLM) takes all three from the class, so the connector validates
``kv_connector_extra_config`` with the very dataclass that planning used (which imports no
vLLM, so planning works anywhere, a login node included).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.policies.base import Policy
from harness.policies.settings import Settings, setting

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STATS_DIR = "."  # the server runs in the cell folder: the JSON snapshot lands there


@dataclass(frozen=True)
class PluginSettings(Settings):
    """What every plugin connector reads (the policy's own fields follow)."""

    tick_s: float = setting(0.01, "idle tick while the policy has pending work (s)")
    stats_dir: str | None = setting(
        None, "directory for the JSON stats snapshot (KVBENCH_PLUGIN_STATS_DIR); the launcher "
        "sets the cell folder")


class PluginPolicy(Policy):
    connector: ClassVar[str] = ""  # the KV connector class in ``module``
    module: ClassVar[str] = ""  # its module, what vLLM imports (kv_connector_module_path)
    settings_type: ClassVar[type[Settings]] = PluginSettings

    def settings(self, cfg) -> Any:
        """The cell's settings; ``stats_dir`` defaults to the cell folder."""
        s = super().settings(cfg)
        return s if s.stats_dir is not None else s.replace(stats_dir=STATS_DIR)

    @classmethod
    def transfer_args(cls, settings: Mapping[str, Any] | PluginSettings | None) -> list[str]:
        """``--kv-transfer-config`` that loads this policy's connector with ``settings``
        (all of them: the command line shows every value the connector runs with)."""
        s = settings if isinstance(settings, PluginSettings) else cls.parse_settings(settings)
        return kv_transfer_args(cls.connector, cls.module, s.to_dict())

    @classmethod
    def transfer_env(cls, settings: Mapping[str, Any] | PluginSettings | None) -> dict[str, str]:
        s = settings if isinstance(settings, PluginSettings) else cls.parse_settings(settings)
        return plugin_env(s.stats_dir)

    def server_args(self, cfg) -> list[str]:
        return self.transfer_args(self.settings(cfg)) + super().server_args(cfg)

    def implementation(self, cfg) -> str:
        return f"kvbench's {self.connector} ({self.module}), on {self._engine(cfg)}"

    def server_env(self, cfg) -> dict[str, str]:
        env = self.transfer_env(self.settings(cfg))
        env.pop("PYTHONPATH", None)  # harness.server puts the repo on PYTHONPATH already
        return {**env, **super().server_env(cfg)}


def kv_transfer_args(connector: str, module: str, settings: dict[str, Any]) -> list[str]:
    """``--kv-transfer-config`` loading ``connector`` from ``module`` with ``settings``."""
    config = {
        "kv_connector": connector,
        "kv_connector_module_path": module,
        "kv_role": "kv_both",
        "kv_connector_extra_config": settings,
    }
    return ["--kv-transfer-config", json.dumps(config, sort_keys=True)]


def plugin_env(stats_dir: str | None) -> dict[str, str]:
    """Make ``harness.plugins`` importable in vLLM's processes; route the JSON snapshot."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path}
    if stats_dir:
        env["KVBENCH_PLUGIN_STATS_DIR"] = str(stats_dir)
    return env
