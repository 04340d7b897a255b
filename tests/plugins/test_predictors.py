"""The tool-time predictors on known sequences, their fall-backs, the prediction-error record
and the shared gap history, without a server (predictions written out by hand)."""

from __future__ import annotations

import math

import pytest

from harness.hints import Hint
from harness.plugins import gaps, predictors
from harness.plugins.predictors import GapHistory, nearest_rank
from harness.policies import get_class

SPEC = get_class("predictive_prefetch")


def make(name: str, **settings):
    return predictors.make(name, SPEC.parse_settings({"predictor": name, **settings}))


def hint(tool: str = "grep", tool_s: float = 0.0) -> Hint:
    return Hint("1", 1, False, tool_s, tool)


def feed(p, tool: str, gap_values) -> None:
    for g in gap_values:
        p.observe(hint(tool), g)


def test_the_registry_is_the_setting_s_allowed_values():
    assert list(predictors.PREDICTORS) == ["oracle", "fixed", "mean", "quantile", "learned"]
    d = SPEC.settings_type()
    assert (d.predictor, d.fixed_s, d.quantile, d.min_samples, d.learn_rate) == (
        "oracle", 2.0, 0.5, 10, 0.05)


def test_oracle_and_fixed_ignore_what_they_see():
    o, f = make("oracle"), make("fixed", fixed_s=3.0)
    feed(o, "grep", [100.0] * 20)
    feed(f, "grep", [100.0] * 20)
    assert o.predict(hint(tool_s=0.7)) == 0.7 and o.predict(hint(tool_s=-1.0)) == 0.0
    assert f.predict(hint(tool_s=0.7)) == 3.0


def test_mean_per_tool_with_global_then_fixed_fall_back():
    p = make("mean", min_samples=3, fixed_s=9.0)
    assert p.predict(hint("grep")) == 9.0  # nothing seen
    feed(p, "ls", [1.0, 2.0])
    assert p.predict(hint("grep")) == 9.0  # 2 gaps overall < 3
    feed(p, "cat", [6.0])
    assert p.predict(hint("grep")) == 3.0  # all tools: (1 + 2 + 6) / 3
    feed(p, "grep", [10.0, 20.0])
    assert p.predict(hint("grep")) == pytest.approx(39 / 5)  # grep has 2 < 3: global mean
    feed(p, "grep", [30.0])
    assert p.predict(hint("grep")) == 20.0  # grep's own mean of 10, 20, 30
    assert p.predict(hint("ls")) == pytest.approx(69 / 6)  # ls: 2 gaps, global mean


def test_quantile_is_the_nearest_rank_of_the_tool_s_history():
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0  # ceil(0.5 x 4) = 2nd smallest
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 0.9) == 4.0  # ceil(3.6) = 4th
    assert nearest_rank([5.0], 0.01) == 5.0
    p50, p90 = make("quantile", min_samples=4), make("quantile", quantile=0.9, min_samples=4)
    for p in (p50, p90):
        feed(p, "grep", [0.5, 8.0, 1.0, 2.0, 1.5])  # sorted 0.5 1 1.5 2 8
    assert p50.predict(hint("grep")) == 1.5  # ceil(2.5) = 3rd
    assert p90.predict(hint("grep")) == 8.0  # ceil(4.5) = 5th: the tail
    assert p50.predict(hint("")) == 1.5  # the unnamed tool: no gaps, all tools' (the same 5)


def test_learned_is_an_exponentially_weighted_log_normal_fit():
    """a = 0.5; gaps 1, e^2, e^2: m = 0 -> 1 -> 1.5; v = 0 -> 0.5 (0 + 0.5 x 4) = 1 ->
    0.5 (1 + 0.5 x 1) = 0.75. Predicts exp(m + z sqrt(v)), z the quantile's normal score."""
    median = make("learned", learn_rate=0.5, min_samples=1)
    upper = make("learned", learn_rate=0.5, min_samples=1, quantile=0.8413447460685429)  # z=1
    for p in (median, upper):
        feed(p, "grep", [1.0, math.e**2])
    assert median.predict(hint("grep")) == pytest.approx(math.e)  # m = 1
    assert upper.predict(hint("grep")) == pytest.approx(math.e**2)  # m + 1 sqrt(1)
    feed(median, "grep", [math.e**2])
    assert median.predict(hint("grep")) == pytest.approx(math.exp(1.5))
    assert median.fits["grep"] == pytest.approx((1.5, 0.75, 3))


def test_learned_shrugs_off_one_outlier_that_drags_the_mean():
    learned, mean = make("learned", min_samples=1), make("mean", min_samples=1)
    for p in (learned, mean):
        feed(p, "grep", [1.0] * 50 + [1000.0])
    assert mean.predict(hint("grep")) == pytest.approx(1050 / 51)  # 20.6 s
    assert learned.predict(hint("grep")) == pytest.approx(math.exp(0.05 * math.log(1000)))


def test_learned_falls_back_like_the_others_and_forgets_an_old_regime():
    p = make("learned", min_samples=2, fixed_s=4.0, learn_rate=0.2)
    assert p.predict(hint("grep")) == 4.0
    feed(p, "ls", [2.0, 2.0])
    assert p.predict(hint("grep")) == pytest.approx(2.0)  # all tools' fit
    feed(p, "grep", [1.0] * 20 + [8.0] * 30)  # the tool got slower
    assert 7.5 < p.predict(hint("grep")) <= 8.0


def test_gap_history_counts_all_and_keeps_the_last():
    h = GapHistory(keep=3)
    for g in (1.0, 2.0, 3.0, -1.0):
        h.add("grep", g)  # a negative gap counts as 0
    assert h.count("grep") == 4 and h.mean("grep") == 1.5
    assert list(h.values("grep")) == [2.0, 3.0, 0.0]
    assert h.pick("grep", 3) == ("tool", "grep")
    assert h.pick("ls", 3) == ("global", GapHistory.ALL) and h.pick("ls", 4) == ("fixed", None)
    assert h.tools() == {"grep": (6.0, 4)}


def test_the_tracker_records_how_wrong_each_prediction_was():
    t = gaps.GapTracker(make("fixed", fixed_s=2.0))
    assert t.turn_ended(Hint("A", 1, False, 0.5, "grep"), now=100.0) == 2.0
    assert t.arrived("B", 101.0) is None  # no turn of B ended
    g = t.arrived("A", 103.5)
    assert g == gaps.Gap("grep", 2.0, 3.5) and t.arrived("A", 104.0) is None
    assert gaps.error_terms(g) == {"predictions": 1.0, "prediction_over_seconds": 0.0,
                                   "prediction_under_seconds": 1.5,
                                   "returns_before_prediction": 0.0}  # fmt: skip
    t.turn_ended(Hint("A", 2, False, 0.5, "grep"), now=110.0)
    t.forget("A")  # the job ended
    assert t.arrived("A", 111.0) is None


def test_per_tool_summary_bias_mae_and_early_share():
    rows: dict[str, dict[str, float]] = {}
    for tool, predicted, actual in [("grep", 2.0, 3.0), ("grep", 2.0, 1.0), ("grep", 2.0, 1.5),
                                    ("", 1.0, 1.0)]:
        row = rows.setdefault(tool, {})
        for k, v in gaps.error_terms(gaps.Gap(tool, predicted, actual)).items():
            row[k] = row.get(k, 0.0) + v
    s = gaps.summaries(rows)
    # grep: errors -1, +1, +0.5 -> bias 0.5 / 3, MAE 2.5 / 3, 2 of 3 came back early
    assert s["tools"]["grep"] == {"n": 3, "bias_s": 0.1667, "mae_s": 0.8333,
                                  "early_share": 0.6667}  # fmt: skip
    assert s["tools"][""] == {"n": 1, "bias_s": 0.0, "mae_s": 0.0, "early_share": 0.0}
    assert s["all"] == {"n": 4, "bias_s": 0.125, "mae_s": 0.625, "early_share": 0.5}
    assert gaps.summary({}) == {"n": 0, "bias_s": None, "mae_s": None, "early_share": None}


@pytest.mark.parametrize("key, value, message", [
    ("predictor", "ewma", "policy.settings.predictor=ewma is not allowed for "
                          "policy=predictive_prefetch; allowed: oracle, fixed, mean, quantile, "
                          "learned"),
    ("quantile", 1.0, "policy.settings.quantile=1.0 is out of range for "
                      "policy=predictive_prefetch; allowed: 0 < quantile < 1"),
    ("min_samples", 0, "policy.settings.min_samples=0 is out of range"),
    ("learn_rate", 1.5, "policy.settings.learn_rate=1.5 is out of range"),
    ("fixed_s", -2, "policy.settings.fixed_s=-2.0 is out of range"),
])  # fmt: skip
def test_bad_predictor_settings_are_refused(key, value, message):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        SPEC.parse_settings({key: value})
    assert str(e.value).startswith(message)
