"""Policy settings: a schema per policy, unknown keys rejected with the valid ones listed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """A policy setting is unknown or has a bad value."""


@dataclass(frozen=True)
class Setting:
    kind: type
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()


def resolve(policy: str, schema: dict[str, Setting], raw: dict[str, Any] | None) -> dict:
    """Defaults overlaid with ``raw``; every value checked against the schema."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise SettingsError(
            f"{policy}: unknown setting(s) {unknown}; valid: {sorted(schema)}")
    out = {}
    for key, spec in schema.items():
        value = raw.get(key, spec.default)
        if value is not None and spec.kind is float and isinstance(value, int):
            value = float(value)
        if value is not None and not isinstance(value, spec.kind):
            raise SettingsError(f"{policy}.{key}: expected {spec.kind.__name__}, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise SettingsError(f"{policy}.{key}={value!r}; allowed: {list(spec.choices)}")
        out[key] = value
    return out


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
