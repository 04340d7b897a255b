"""The one policy registry, the typed settings of each policy and the one hint format.

No vLLM here: all of it must work where planning runs (a login node without vLLM).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from harness import hints, policies
from harness.errors import ConfigError
from harness.hints import Hint, extra_body
from harness.policies import base
from harness.policies.settings import Settings, parse
from launch.compose import _compose, hydra_context, options

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted(p.stem for p in (REPO / "conf" / "policy").glob("*.yaml"))


@pytest.fixture
def registry(monkeypatch):
    """A scratch copy of the registry, restored afterwards."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return base._REGISTRY


# ---- the registry ----
def test_every_policy_module_is_found_without_a_list():
    """Every implementation has its config; a variant config names an implementation."""
    impls = {y: policies.impl_name(yaml.safe_load((REPO / "conf/policy" / f"{y}.yaml").read_text()))
             for y in YAMLS}
    assert sorted(options("policy")) == YAMLS
    assert policies.names() == sorted(set(impls.values()))
    assert {y for y, i in impls.items() if y != i} == {
        "continuum_fixed", "continuum_paper", "predictive_fixed", "predictive_mean",
        "predictive_p50", "predictive_learned", "scored_learned"}
    for name, cls in policies.classes().items():
        assert cls.__module__ == f"harness.policies.{name}", "one module per policy"
        assert isinstance(policies.get(name), cls)


def test_a_name_registered_twice_raises(registry):
    class Other(base.Policy):
        name = "fcfs"

    with pytest.raises(base.RegistryError, match="'fcfs' is registered twice: by "
                       "harness.policies.fcfs.Fcfs and .*Other"):  # fmt: skip
        base.register(Other)
    assert registry["fcfs"].__module__ == "harness.policies.fcfs"

    class Nameless(base.Policy):
        pass

    with pytest.raises(base.RegistryError, match="has no name"):
        base.register(Nameless)


def test_a_new_policy_registers_under_its_name(registry):
    @base.register
    class Mine(base.Policy):
        name = "mine_for_test"

    assert policies.get_class("mine_for_test") is Mine
    assert base.register(Mine) is Mine  # the same class again (a re-import) is no clash


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ConfigError, match="policy=nope has no implementation; known: continuum, "):
        policies.get("nope")


def test_planning_imports_no_vllm():
    code = ("import sys; from harness import policies, plugins; m = plugins.modules(); "
            "[policies.get_class(n).settings_type() for n in policies.names()]; print(sorted(m)); "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['continuum_ttl', 'predictive_prefetch', 'predictive_scored']"


# ---- typed settings ----
@pytest.mark.parametrize("name", YAMLS)
def test_every_policy_yaml_composes_into_its_settings_dataclass(name, monkeypatch):
    monkeypatch.delenv("KVBENCH_CONTINUUM_PYTHON", raising=False)
    with hydra_context():
        cfg = _compose([f"policy={name}"])
    policy = policies.of(cfg)  # a variant (continuum_fixed) runs its impl's settings type
    s = policy.settings(cfg)
    assert type(s) is policy.settings_type and dataclasses.is_dataclass(s)
    # the YAML repeats no default (a value from the environment, ${oc.env:...}, is no default)
    given = OmegaConf.to_container(cfg.policy.settings, resolve=False)
    defaults = policy.settings_type().to_dict()
    assert isinstance(given, dict)
    assert not {k for k, v in given.items() if not str(v).startswith("${") and defaults[k] == v}


@pytest.mark.parametrize("name", policies.names())
def test_each_settings_type_is_frozen_documented_and_its_defaults_valid(name):
    cls = policies.get_class(name).settings_type
    assert issubclass(cls, Settings) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for f in cls.describe():
        assert f["doc"], f"{name}: policy.settings.{f['name']} has no doc"
        assert not f["choices"] or f["default"] in f["choices"], f
    assert parse(cls, cls().to_dict(), name) == cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls().x = 1  # type: ignore[attr-defined]


def test_fcfs_takes_no_settings():
    with pytest.raises(ConfigError) as e:
        policies.get_class("fcfs").parse_settings({"x": 1})
    assert str(e.value) == ("policy.settings.x is unknown for policy=fcfs; known: none (this "
                            "policy takes no settings)")


@pytest.mark.parametrize("name, raw, message", [
    ("predictive_prefetch", {"lead_z": 1},
     "policy.settings.lead_z is unknown for policy=predictive_prefetch; known: fixed_s, "
     "hold_s, host_tier_gb, late_load, lead_s, learn_rate, link_gb_s, min_samples, predictor, "
     "quantile, stats_dir, tick_s"),
    ("predictive_prefetch", {"lead_s": "soon"},
     "policy.settings.lead_s=soon must be a number for policy=predictive_prefetch"),
    ("predictive_prefetch", {"lead_s": True},
     "policy.settings.lead_s=true must be a number for policy=predictive_prefetch"),
    ("predictive_prefetch", {"predictor": "ewma"},
     "policy.settings.predictor=ewma is not allowed for policy=predictive_prefetch; allowed: "
     "oracle"),
    ("predictive_prefetch", {"host_tier_gb": 0},
     "policy.settings.host_tier_gb=0 is not a positive number of GiB"),
    ("continuum_ttl", {"ttl_rule": "running_mean"},
     "policy.settings.ttl_rule=running_mean is not allowed for policy=continuum_ttl; allowed: "
     "fork, paper, fixed"),
    ("lmcache", {"chunk_size": 1.5},
     "policy.settings.chunk_size=1.5 must be a whole number for policy=lmcache"),
    ("native_offload", {"extra_config": [1]},
     "policy.settings.extra_config=[1] must be a mapping (key: value) for policy=native_offload"),
    ("native_offload", {"offload_gb": "all"},
     "policy.settings.offload_gb=all must be a number or null for policy=native_offload"),
    ("native_offload", {"connector": "SimpleCPUOffloadConnector", "eviction_policy": "arc"},
     "policy.settings.eviction_policy=arc applies to OffloadingConnector only"),
    ("continuum", {"default_tool": 3},
     "policy.settings.default_tool=3 must be a string or null for policy=continuum"),
])  # fmt: skip
def test_bad_settings_name_the_key_and_what_is_allowed(name, raw, message):
    with pytest.raises(ConfigError) as e:
        policies.get_class(name).parse_settings(raw)
    assert str(e.value).startswith(message)


def test_ints_are_taken_as_floats_and_mappings_are_copied():
    s = policies.get_class("predictive_prefetch").parse_settings({"lead_s": 1, "host_tier_gb": 2})
    assert s.lead_s == 1.0 and isinstance(s.lead_s, float) and s.host_tier_gb == 2.0
    extra = {"store_threshold": 2}
    n = policies.get_class("native_offload").parse_settings({"extra_config": extra})
    assert n.extra_config == extra and n.extra_config is not extra
    assert policies.get_class("native_offload").settings_type().extra_config == {}


def _docs_table(name: str) -> dict[str, str]:
    """key -> default column of the Settings table of docs/policies/<name>.md."""
    text = (REPO / "docs" / "policies" / f"{name}.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M)
    return {k: v.strip().strip("`") for k, v in rows}


def _shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if value == {}:
        return "{}"
    return str(value)


@pytest.mark.parametrize("name", [n for n in policies.names()
                                  if dataclasses.fields(policies.get_class(n).settings_type)])
def test_the_docs_tables_mirror_the_dataclasses(name):
    table = _docs_table(name)
    fields = policies.get_class(name).settings_type.describe()
    want = {f["name"]: _shown(f["default"]) for f in fields}
    assert table == want, f"docs/policies/{name}.md's Settings table differs from the dataclass"


def test_lead_s_default_is_what_the_recorded_runs_used():
    """docs/validation/h100-20261127.md: every manifest of both runs has lead_s 0.2."""
    assert policies.get_class("predictive_prefetch").settings_type().lead_s == 0.2


# ---- the hint format ----
def test_hint_fields_round_trip_with_a_string_job_id():
    h = Hint.for_turn("42", 2, 8, 0.5, tool="ls")
    fields = h.to_fields()
    assert set(fields) == set(hints.FIELDS) and fields[hints.JOB_ID] == "42"
    assert Hint.from_fields(fields) == h
    assert Hint.from_fields({**fields, hints.JOB_ID: 42}).job_id == "42"  # a number becomes text
    assert Hint.for_turn("42", 8, 8, 0.0).last and not h.last


def test_hint_refuses_a_non_string_job_id():
    with pytest.raises(TypeError, match="job_id must be a str"):
        Hint(7, 1, False)  # type: ignore[arg-type]


def test_from_fields_without_a_hint_and_with_a_bad_one():
    assert Hint.from_fields(None) is None and Hint.from_fields({"x": 1}) is None
    with pytest.raises(ValueError, match="malformed kvbench hint"):
        Hint.from_fields({hints.JOB_ID: "1", hints.TURN: "two"})


def test_extra_body_carries_the_same_fields_everywhere():
    h = Hint.for_turn("9", 8, 8, 0.0)
    body = extra_body(h, continuum_fields=True)
    assert body["vllm_xargs"] == body["kv_transfer_params"] == h.to_fields()
    assert body[hints.CONTINUUM_JOB_ID] == "9" and body[hints.CONTINUUM_LAST] is True
    assert "job_id" not in extra_body(h)


def test_the_client_sends_the_job_id_as_text():
    """harness.client builds its hint with Hint.for_turn(str(job.job_id), ...)."""
    src = (REPO / "harness" / "client.py").read_text()
    assert "Hint.for_turn(str(job.job_id)" in src


def test_the_continuum_shim_reads_the_same_hint_module(tmp_path):
    code = ("import sitecustomize as s, sys; print(s.hints.__file__); print(s.hints.TOOL); "
            "print('harness' in sys.modules)")  # fmt: skip
    shim = REPO / "harness" / "policies" / "continuum_site"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(shim), "PATH": "/usr/bin:/bin"},
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(REPO / "harness" / "hints.py"), hints.TOOL, "False"]
