"""The seam other code calls: server_args / server_env, their settings (the policy's own
dataclass, the same one planning validates with) and the hint the connector parses. No server.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness import policies
from harness.errors import ConfigError
from harness.hints import Hint, extra_body
from harness.plugins import POLICIES, modules, policy_module, predictors
from harness.plugins.connector import request_hint
from launch import plan

PLUGINS = sorted(modules())


def test_the_plugin_lookup_is_derived_from_the_policy_registry():
    assert POLICIES == modules() == {
        "continuum_ttl": "harness.plugins.continuum_ttl",
        "predictive_prefetch": "harness.plugins.predictive_prefetch",
        "predictive_scored": "harness.plugins.predictive_scored",
    }


@pytest.mark.parametrize("name", PLUGINS)
def test_server_args_load_the_connector_from_our_module(name):
    mod = policy_module(name)
    spec = policies.get_class(name)
    flag, config = mod.server_args({"stats_dir": "/tmp/s"})
    cfg = json.loads(config)
    assert flag == "--kv-transfer-config"
    assert cfg["kv_connector_module_path"] == mod.MODULE == mod.__name__ == spec.module
    assert cfg["kv_connector"] == mod.CONNECTOR == spec.connector and hasattr(mod, mod.CONNECTOR)
    conn = getattr(mod, mod.CONNECTOR)
    assert conn.SPEC is spec and name == conn.POLICY
    # every setting, defaults included, so the command line shows what the connector runs with
    want = spec.settings_type().replace(stats_dir="/tmp/s").to_dict()
    assert cfg["kv_connector_extra_config"] == want
    assert mod.server_env({"stats_dir": "/tmp/s"})["KVBENCH_PLUGIN_STATS_DIR"] == "/tmp/s"


@pytest.mark.parametrize("name", PLUGINS)
def test_the_connector_parses_its_extra_config_with_the_policy_dataclass(name: str) -> None:
    mod = policy_module(name)
    conn = getattr(mod, mod.CONNECTOR)
    given: dict = {"stats_dir": "/tmp/s"}
    if name != "continuum_ttl":
        given["host_tier_gb"] = 2
    _, config = mod.server_args(given)
    extra = json.loads(config)["kv_connector_extra_config"]
    s = conn.resolve_settings(extra)
    assert isinstance(s, policies.get_class(name).settings_type)
    assert s.to_dict() == extra


@pytest.mark.parametrize("name", PLUGINS)
def test_unknown_setting_names_the_valid_ones(name):
    with pytest.raises(ConfigError, match=r"policy.settings.no_such_key is unknown .*: .*tick_s"):
        policy_module(name).server_args({"no_such_key": 1})


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(ConfigError, match="allowed: fork, paper, fixed"):
        policy_module("continuum_ttl").server_args({"ttl_rule": "running_mean"})
    for name in ("predictive_prefetch", "predictive_scored"):
        with pytest.raises(ConfigError, match="allowed: oracle, fixed, mean, quantile, learned$"):
            policy_module(name).server_args({"predictor": "ewma"})


@pytest.mark.parametrize("name", ["predictive_prefetch", "predictive_scored"])
def test_the_prefetch_connectors_need_a_host_tier_size(name):
    conn = getattr(policy_module(name), policies.get_class(name).connector)
    with pytest.raises(ConfigError, match=f"host_tier_gb=null: the {name} connector"):
        conn.resolve_settings({})


# (policy, setting, value as an override, value as kv_connector_extra_config carries it)
BAD = [
    ("predictive_prefetch", "lead_s", "soon", "soon"),
    ("predictive_prefetch", "predictor", "ewma", "ewma"),
    ("predictive_prefetch", "late_load", "3", 3),
    ("predictive_prefetch", "lead_z", "1", 1),
    ("predictive_prefetch", "quantile", "1.5", 1.5),
    ("predictive_prefetch", "min_samples", "0", 0),
    ("predictive_scored", "predictor", "ewma", "ewma"),
    ("predictive_scored", "learn_rate", "0", 0.0),
    ("predictive_scored", "prefill_tok_s", "-5", -5.0),
    ("predictive_scored", "transfer_gb_s", "fast", "fast"),
    ("continuum_ttl", "ttl_rule", "running_mean", "running_mean"),
    ("continuum_ttl", "ttl_s", "true", True),
    ("continuum_ttl", "ttl_s", "-1", -1.0),
]


@pytest.mark.parametrize("policy, key, override, value", BAD)
def test_planning_and_the_connector_refuse_alike(tmp_path, policy, key, override, value):
    """The same bad setting, given to the launcher and to the connector in vLLM: one message."""
    with pytest.raises(ConfigError) as launch_side:
        plan.make([f"results_dir={tmp_path}", f"policy={policy}",
                   f"++policy.settings.{key}={override}"], today="20260101")  # fmt: skip
    conn = getattr(policy_module(policy), policies.get_class(policy).connector)
    with pytest.raises(ConfigError) as plugin_side:
        conn.resolve_settings({key: value, "host_tier_gb": 1.0} if policy != "continuum_ttl"
                              else {key: value})  # fmt: skip
    assert str(launch_side.value) == str(plugin_side.value)
    assert f"policy.settings.{key}" in str(plugin_side.value)


@pytest.mark.parametrize("where", ["kv_transfer_params", "vllm_xargs"])
def test_hint_round_trip_from_the_client_body_to_the_connector(where):
    sent = Hint.for_turn("17", 3, 8, 0.5, tool="grep")
    body = json.loads(json.dumps(extra_body(sent, continuum_fields=True)))  # over the wire
    if where == "kv_transfer_params":
        request = SimpleNamespace(kv_transfer_params=body["kv_transfer_params"])
    else:
        request = SimpleNamespace(sampling_params=SimpleNamespace(extra_args=body["vllm_xargs"]))
    got = request_hint(request)
    assert got == sent and isinstance(got.job_id, str)
    assert body["job_id"] == "17" and body["is_last_step"] is False  # Continuum's fields
    last = request_hint(SimpleNamespace(
        kv_transfer_params=extra_body(Hint.for_turn("17", 8, 8, 0.0))["kv_transfer_params"]))
    assert last is not None and last.last and last.tool_s == 0.0


def test_requests_without_a_valid_hint_are_plain_vllm():
    assert request_hint(SimpleNamespace(kv_transfer_params=None)) is None
    assert request_hint(SimpleNamespace(kv_transfer_params={"other": 1})) is None
    bad = {"kvb_job_id": "1", "kvb_turn": "two"}
    assert request_hint(SimpleNamespace(kv_transfer_params=bad)) is None


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
