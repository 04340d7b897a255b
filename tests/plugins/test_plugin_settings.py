"""The seam other code calls: server_args / server_env and their settings schema (no server)."""

from __future__ import annotations

import json

import pytest

from harness.plugins import POLICIES, policy_module, predictors
from harness.plugins.settings import SettingsError


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_server_args_load_the_connector_from_our_module(name):
    mod = policy_module(name)
    flag, config = mod.server_args({"stats_dir": "/tmp/s"})
    cfg = json.loads(config)
    assert flag == "--kv-transfer-config"
    assert cfg["kv_connector_module_path"] == mod.MODULE == f"harness.plugins.{name}"
    assert hasattr(mod, cfg["kv_connector"])
    assert mod.server_env({"stats_dir": "/tmp/s"})["KVBENCH_PLUGIN_STATS_DIR"] == "/tmp/s"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_unknown_setting_names_the_valid_ones(name):
    with pytest.raises(SettingsError, match="valid: .*tick_s"):
        policy_module(name).server_args({"no_such_key": 1})


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(SettingsError, match="allowed: .*running_mean"):
        policy_module("continuum_ttl").server_args({"ttl_rule": "paper"})
    with pytest.raises(SettingsError, match="oracle"):
        policy_module("predictive_prefetch").server_args({"predictor": "ewma"})


def test_unknown_policy_and_predictor():
    with pytest.raises(ValueError, match="known"):
        policy_module("fcfs")
    with pytest.raises(ValueError, match="registered"):
        predictors.make("nope", {})


def test_unlisted_vllm_release_is_refused_with_the_supported_ones(monkeypatch):
    import vllm

    from harness.plugins import compat

    monkeypatch.setattr(vllm, "__version__", "0.27.0")
    monkeypatch.delenv("KVBENCH_PLUGIN_UNTESTED_OK", raising=False)
    with pytest.raises(compat.UnsupportedVLLM, match="0.26.0, 0.32.0"):
        compat.check_vllm()
    monkeypatch.setenv("KVBENCH_PLUGIN_UNTESTED_OK", "1")
    assert compat.check_vllm() == "0.27.0"  # internals still match this install
