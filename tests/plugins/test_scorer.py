"""predictive_scored's cost model on constructed cases, without a server: what the model says
for each, worked out by hand in the comments (token-seconds of VRAM wasted)."""

from __future__ import annotations

import dataclasses

import pytest

from harness.errors import ConfigError
from harness.plugins.scorer import Situation, decide, remaining_gap, waste
from harness.policies import get_class

# An 8B model on an H100-class GPU: 16K-token context at 128 KiB per token (2.1 GB), a 25 GB/s
# link (t_x = 0.0859 s), 35K tokens/s prefill (t_r = 0.468 s), a 400K-token pool 70% used by
# other work (p = 0.7, busy = 280K tokens), lead 0.2 s, 20% of this tool's returns early.
GPU = Situation(gap_s=1.0, tokens=16384, bytes_per_token=131072, transfer_gb_s=25.0,
                prefill_tok_s=35000.0, free_frac=0.3, pool_tokens=400_000, lead_s=0.2,
                early_share=0.2)
T_X, T_R, P, BUSY = 16384 * 131072 / 25e9, 16384 / 35000, 0.7, 280_000.0
STALL_X, STALL_R = T_X * (16384 + BUSY), T_R * (16384 + BUSY)  # 25,460 and 138,740


def at(base: Situation = GPU, **changes) -> Situation:
    return dataclasses.replace(base, **changes)


def test_the_waste_of_each_action_is_the_documented_formula():
    w = waste(at(gap_s=20.0))
    assert w["keep"] == pytest.approx(P * 16384 * 20.0)  # 229,376
    assert w["offload"] == pytest.approx(P * 16384 * (T_X + 0.2) + 0.2 * STALL_X)  # 8,371
    assert w["drop"] == pytest.approx(STALL_R)  # 138,740
    v = decide(at(gap_s=20.0))
    assert v.terms == pytest.approx({"p": P, "busy": BUSY, "t_x": T_X, "t_r": T_R})


def test_short_gap_and_big_context_keep():
    # g = 0.25 s is shorter than copy-out + lead (0.286 s): offloading holds the blocks the
    # whole gap anyway (2,867, as keep) and adds the early-return risk (+5,092); drop 138,740.
    v = decide(at(gap_s=0.25))
    assert v.action == "keep"
    assert v.waste["keep"] == pytest.approx(2867.2)
    assert v.waste["offload"] == pytest.approx(2867.2 + 0.2 * STALL_X)


def test_long_gap_and_cheap_transfer_offload():
    assert decide(at(gap_s=20.0)).action == "offload"  # 8,371 vs keep 229,376, drop 138,740
    assert decide(at(gap_s=1.0, early_share=0.0)).action == "offload"  # 3,279 vs keep 11,469


def test_without_pressure_keeping_is_free_whatever_the_gap():
    # p = 0: keep 0; offload 0.2 x 0.0859 x 16,384 = 281 (a stall idles only the job); drop 7,667
    for gap in (0.5, 60.0, 3600.0):
        v = decide(at(gap_s=gap, free_frac=1.0))
        assert v.action == "keep" and v.waste["keep"] == 0.0


def test_long_gap_with_no_room_on_the_host_tier_drops_past_the_break_even_gap():
    # keep = p C g against drop = t_r (C + busy): break-even g* = (C / p + pool) / prefill
    g_star = (16384 / P + 400_000) / 35000  # 12.10 s
    assert decide(at(gap_s=g_star - 0.01, host_room=False)).action == "keep"
    assert decide(at(gap_s=g_star + 0.01, host_room=False)).action == "drop"
    assert waste(at(host_room=False))["offload"] == float("inf")
    assert decide(at(gap_s=60.0, host_room=False, on_host=True)).action == "offload"  # has a copy


def test_a_slow_link_makes_recomputing_cheaper_than_copying():
    # The CPU engine's tiny model behind an emulated 0.0026 GB/s link: 2,600 tokens at 1 KiB,
    # t_x = 1.024 s, t_r = 0.068 s, pool 7,168 tokens half used. g = 10 s: keep 13,000,
    # offload 1,300 x 2.048 + 0.2 x 1.024 x 6,184 = 3,929, drop 0.068 x 6,184 = 423.
    cpu = Situation(gap_s=10.0, tokens=2600, bytes_per_token=1024, transfer_gb_s=0.0026,
                    prefill_tok_s=38000.0, free_frac=0.5, pool_tokens=7168, lead_s=0.2,
                    early_share=0.2)
    v = decide(cpu)
    assert v.action == "drop"
    assert v.waste == pytest.approx({"keep": 13000.0, "offload": 3928.9, "drop": 423.1}, abs=0.5)
    assert decide(at(cpu, gap_s=0.3)).action == "keep"  # 390 < 423


def test_early_returns_make_offloading_risky():
    # g = 1 s: offload's holding part is 3,279; each early return stalls 25,460 (a late load)
    assert decide(at(gap_s=1.0, early_share=0.0)).action == "offload"
    assert decide(at(gap_s=1.0, early_share=0.9)).action == "keep"  # 26,193 > keep 11,469
    # without late loads an early turn recomputes: the risk costs t_r, not t_x
    assert decide(at(gap_s=5.0, early_share=0.5)).action == "offload"  # 16,009 < 57,344
    assert decide(at(gap_s=5.0, early_share=0.5, late_load=False)).action == "keep"


def test_a_re_decision_with_a_host_copy_releases_and_re_times():
    # A prefetched job past its prediction, still out after 4 s (remaining gap: 4 s). With a
    # host copy nothing is copied out: offload holds the blocks lead_s only (2,294 + risk).
    g = remaining_gap(4.0)
    assert g == 4.0 and remaining_gap(-1.0) == 0.0
    v = decide(at(gap_s=g, on_host=True))
    assert v.action == "offload"
    assert v.waste["offload"] == pytest.approx(P * 16384 * 0.2 + 0.2 * STALL_X)


def test_ties_go_to_keep_then_offload():
    v = decide(at(gap_s=0.25, early_share=0.0))  # offload = keep: the blocks stay either way
    assert v.waste["offload"] == pytest.approx(v.waste["keep"]) and v.action == "keep"


@pytest.mark.parametrize("key, value, message", [
    ("prefill_tok_s", 0, "policy.settings.prefill_tok_s=0.0 is out of range for "
                         "policy=predictive_scored; allowed: a positive number, or null"),
    ("transfer_gb_s", -1, "policy.settings.transfer_gb_s=-1.0 is out of range"),
    ("predictor", "ewma", "allowed: oracle, fixed, mean, quantile, learned"),
])  # fmt: skip
def test_bad_scored_settings_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        get_class("predictive_scored").parse_settings({key: value})
