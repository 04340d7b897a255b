"""continuum_ttl's TTL rules and settings, without a server: the fork's 2 s rule, the paper's
cost model on a made-up CDF with its fall-backs, and bad settings refused at planning."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.hints import Hint
from harness.plugins import ttl_rules
from harness.plugins.ttl_rules import choose_ttl
from harness.policies import get_class
from launch import plan

SPEC = get_class("continuum_ttl")


def rule(**settings):
    return ttl_rules.make(SPEC.parse_settings(settings))


def hint(tool: str = "grep") -> Hint:
    return Hint("1", 1, False, 0.5, tool)


def test_the_registry_is_the_setting_s_allowed_values_and_fork_is_the_default():
    assert list(ttl_rules.TTL_RULES) == ["fork", "paper", "fixed"]
    assert SPEC.settings_type().ttl_rule == "fork" and SPEC.settings_type().ttl_s == 2.0


def test_fixed_pins_ttl_s_whatever_it_sees():
    r = rule(ttl_rule="fixed", ttl_s=3.0)
    r.observe_gap("grep", 50.0)
    assert r.ttl(hint(), 1000) == 3.0


def test_fork_pins_ttl_s_while_the_tool_mean_is_at_most_ttl_s():
    r = rule()  # fork, ttl_s 2.0
    assert r.ttl(hint("grep"), 0) == 2.0  # nothing seen yet: pin, as the fork does
    r.observe_gap("grep", 1.0)
    r.observe_gap("grep", 3.0)  # mean 2.0: still pinned
    assert r.ttl(hint("grep"), 0) == 2.0
    r.observe_gap("grep", 3.5)  # mean 2.5 > 2 s: not pinned
    assert r.ttl(hint("grep"), 0) == 0.0
    assert r.ttl(hint("ls"), 0) == 2.0  # per tool
    assert r.state()["tools"]["grep"] == {"n": 3, "mean_s": 2.5}


def test_paper_choice_on_a_made_up_cdf():
    # 10 gaps: 60% return within 0.5 s, 30% around 3 s, 10% at 20 s.
    gaps = [0.3, 0.4, 0.4, 0.5, 0.5, 0.5, 2.8, 3.0, 3.0, 20.0]
    # utility u(tau) = F(tau) * B - tau:
    #   B = 1:  u(0.5) = 0.6 - 0.5 = 0.1; u(3.0) = 0.9 - 3 < 0; u(0.3) = 0.1 - 0.3 < 0
    assert choose_ttl(gaps, 1.0, 60.0) == (0.5, 0.6)
    #   B = 10: u(0.5) = 5.5, u(3.0) = 9 - 3 = 6.0, u(20) = 10 - 20 < 0  ->  3.0
    assert choose_ttl(gaps, 10.0, 60.0) == (3.0, 0.9)
    #   B = 40: u(3.0) = 33, u(20) = 40 - 20 = 20  ->  3.0; B = 200: u(20) = 180 > 177 -> 20
    assert choose_ttl(gaps, 40.0, 60.0)[0] == 3.0
    assert choose_ttl(gaps, 200.0, 60.0) == (20.0, 1.0)
    assert choose_ttl(gaps, 200.0, 10.0)[0] == 3.0  # ttl_max_s caps the candidates
    #   B = 0.5: every tau > 0 loses -> do not pin
    assert choose_ttl(gaps, 0.5, 60.0) == (0.0, 0.0)
    assert choose_ttl([], 10.0, 60.0) == (0.0, 0.0)


def test_paper_rule_benefit_is_t_times_eta_plus_reload():
    r = rule(ttl_rule="paper", min_samples=10, eta=2.0, reload_s_per_token=1e-3)
    for g in [0.3, 0.4, 0.4, 0.5, 0.5, 0.5, 2.8, 3.0, 3.0, 20.0]:
        r.observe_gap("grep", g)
    assert r.ttl(hint("grep"), 1000) == 0.5  # T 0 (none seen): B = reload 1.0
    r.observe_wait(4.0)
    r.observe_wait(2.0)  # T = 3 s, eta 2: B = 6 + 1 = 7: u(0.5) = 3.7, u(3) = 3.3
    assert r.ttl(hint("grep"), 1000) == 0.5
    assert r.last["source"] == "tool" and r.last["benefit_s"] == 7.0
    assert r.ttl(hint("grep"), 4000) == 3.0  # B = 6 + 4 = 10
    fixed_t = rule(ttl_rule="paper", min_samples=1, queue_delay_s=0.0, reload_s_per_token=0.0)
    fixed_t.observe_wait(100.0)  # a setting overrides what is observed
    fixed_t.observe_gap("grep", 1.0)
    assert fixed_t.ttl(hint("grep"), 10**6) == 0.0  # B = 0: never worth pinning


def test_paper_rule_falls_back_to_the_global_cdf_then_to_ttl_s():
    r = rule(ttl_rule="paper", min_samples=4, ttl_s=7.0, reload_s_per_token=0.01)
    for g in (1.0, 1.0, 1.0):
        r.observe_gap("ls", g)
    assert r.ttl(hint("grep"), 100) == 7.0 and r.last["source"] == "fixed"  # 3 < 4 gaps
    r.observe_gap("cat", 9.0)  # 4 gaps overall; none of grep's own
    # B = 0.01 x 100 tokens = 1: u(1) = 0.75 - 1 < 0, so not worth pinning; at 1000 tokens
    # B = 10: u(1) = 7.5 - 1 beats u(9) = 10 - 9
    assert r.ttl(hint("grep"), 100) == 0.0 and r.last["source"] == "global"
    assert r.ttl(hint("grep"), 1000) == 1.0 and r.last["benefit_s"] == 10.0
    for g in (30.0, 30.0, 30.0, 30.0):
        r.observe_gap("grep", g)  # grep's own CDF now (4 gaps, all 30 s)
    assert r.ttl(hint("grep"), 1000) == 0.0 and r.last["source"] == "tool"  # 10 - 30 < 0


@pytest.mark.parametrize("key, value, message", [
    ("ttl_s", "-1", "policy.settings.ttl_s=-1.0 is too small for policy=continuum_ttl; "
                    "allowed: a number >= 0"),
    ("ttl_rule", "running_mean", "policy.settings.ttl_rule=running_mean is not allowed for "
                                 "policy=continuum_ttl; allowed: fork, paper, fixed"),
    ("ttl_rule", "nope", "allowed: fork, paper, fixed"),
    ("ttl_max_s", "0", "policy.settings.ttl_max_s=0.0 is too small"),
    ("min_samples", "0", "policy.settings.min_samples=0 is too small"),
    ("eta", "-0.5", "policy.settings.eta=-0.5 is too small"),
    ("queue_delay_s", "-3", "policy.settings.queue_delay_s=-3.0 is too small"),
    ("reload_s_per_token", "-1e-5", "policy.settings.reload_s_per_token"),
    ("min_free_frac", "1.0", "policy.settings.min_free_frac=1.0 is out of range"),
    ("pinned_first", "maybe", "policy.settings.pinned_first=maybe must be true or false"),
])  # fmt: skip
def test_bad_settings_fail_at_planning(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as e:
        plan.make([f"results_dir={tmp_path}", "policy=continuum_ttl",
                   f"++policy.settings.{key}={value}"], today="20260101")  # fmt: skip
    assert message in str(e.value)
    assert f"policy.settings.{key}" in str(e.value)


def test_sched_program_loads_the_pin_first_scheduler_and_fcfs_does_not():
    s = SPEC.parse_settings({})
    assert SPEC.scheduler_args(s, "program") == [
        "--scheduler-cls", "harness.plugins.pin_first.PinFirstScheduler"]
    assert SPEC.scheduler_args(s, "fcfs") == []  # pin-only: vLLM's own scheduler
    assert SPEC.scheduler_args(s.replace(pinned_first=False), "program") == []


def test_the_reload_profile_fits_seconds_per_token():
    from harness.plugins.reload_profile import fit

    a, b = fit([(1000, 0.15), (2000, 0.25), (4000, 0.45), (2000, 0.25)])
    assert abs(b - 1e-4) < 1e-12 and abs(a - 0.05) < 1e-9
    with pytest.raises(ValueError, match="two different"):
        fit([(1000, 0.1), (1000, 0.2)])
