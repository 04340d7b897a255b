"""analysis.policy_counters: the predictor's error per tool and the scorer's decisions, from a
cell's kvbench counters (constructed samples with known answers; the H200 fixture's real
records for the decisions table and the report's section)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline, policy_counters, report
from harness.plugins.counters import counter

K = {"sweep": "s", "gpu": "cpu", "dram": 8, "policy": "predictive_mean", "sched": "fcfs",
     "jps": 1.0}
H200 = Path(__file__).parents[1] / "fixtures/h200_seed/20261129_h200_sched"


def _metrics(rows: list[tuple[float, str, dict, float]], **key) -> pd.DataFrame:
    return pd.DataFrame([{**K, **key, "t_s": t, "name": counter(n),
                          "labels": json.dumps({"engine": "0", **lab}, sort_keys=True),
                          "value": v} for t, n, lab, v in rows])


def _tool(tool: str, n: float, over: float, under: float, early: float, t: float = 5.0):
    lab = {"tool": tool}
    return [(0.0, "predictions", lab, 0.0), (t, "predictions", lab, n),
            (0.0, "prediction_over_seconds", lab, 0.0), (t, "prediction_over_seconds", lab, over),
            (0.0, "prediction_under_seconds", lab, 0.0),
            (t, "prediction_under_seconds", lab, under),
            (0.0, "returns_before_prediction", lab, 0.0),
            (t, "returns_before_prediction", lab, early)]


def test_bias_mae_and_early_share_per_tool_and_pooled():
    # shell: 4 returns, predictions 6 s too long in all and 2 s too short: bias +1, MAE 2
    # Read: 10 returns, 1 s too long, 4 s too short: bias -0.3, MAE 0.5; 7 came back early
    m = _metrics(_tool("shell", 4, 6.0, 2.0, 1) + _tool("Read", 10, 1.0, 4.0, 7))
    p = policy_counters.predictions(m).set_index("tool")
    assert list(p.index) == ["Read", "shell", "(all)"]
    assert p.loc["shell", ["predictions", "bias_s", "mae_s", "early_share"]].tolist() == \
        pytest.approx([4, 1.0, 2.0, 0.25])
    assert p.loc["Read", ["bias_s", "mae_s", "early_share"]].tolist() == \
        pytest.approx([-0.3, 0.5, 0.7])
    # pooled over 14 returns: over 7 s, under 6 s
    assert p.loc["(all)", ["predictions", "bias_s", "mae_s", "early_share"]].tolist() == \
        pytest.approx([14, 1 / 14, 13 / 14, 8 / 14])


def test_two_engines_and_a_counter_reset_add_up():
    a = _tool("", 3, 3.0, 0.0, 0)
    # the second engine's counters restart (a reset) half-way: 2 -> 0 -> 1 counts 2 + 1
    b = [(0.0, "predictions", {"tool": ""}, 0.0), (1.0, "predictions", {"tool": ""}, 2.0),
         (2.0, "predictions", {"tool": ""}, 0.0), (3.0, "predictions", {"tool": ""}, 1.0),
         (3.0, "prediction_over_seconds", {"tool": ""}, 0.0),
         (4.0, "prediction_over_seconds", {"tool": ""}, 3.0)]
    m = pd.concat([_metrics(a), _metrics(b).assign(
        labels=lambda d: d["labels"].str.replace('"engine": "0"', '"engine": "1"'))])
    p = policy_counters.predictions(m).set_index("tool")
    assert p.loc["", "predictions"] == 6
    assert p.loc["", "mae_s"] == pytest.approx(1.0)


def test_cells_without_predictions_or_decisions_have_no_rows():
    m = _metrics(_tool("x", 0, 0.0, 0.0, 0) + [(0.0, "kept", {}, 0.0), (9.0, "kept", {}, 0.0)],
                 policy="continuum_ttl")
    assert policy_counters.predictions(m).empty
    assert policy_counters.decisions(m).empty


def test_decisions_count_each_kind():
    rows = [(0.0, "kept", {}, 0.0), (5.0, "kept", {}, 4.0), (0.0, "offloaded", {}, 0.0),
            (5.0, "offloaded", {}, 9.0), (0.0, "dropped", {}, 0.0), (5.0, "dropped", {}, 2.0)]
    d = policy_counters.decisions(_metrics(rows, policy="predictive_scored"))
    assert d[["kept", "offloaded", "dropped"]].iloc[0].tolist() == [4, 9, 2]


def test_the_report_shows_the_h200_prefetch_outcomes():
    res = pipeline.compute([H200], pipeline.Options(n_boot=0))
    d = res.decisions.set_index(["policy", "sched", "jps"])
    # lease 1's predictive_prefetch cell (program order, JPS 10): 956 turns found their KV
    # prefetched, 86 came back before it had landed; lease 2's (fcfs order): 547 and 358, 905
    # offloads of which 534 were never read back; lease 3's at JPS 3 (program): 1,050
    # offloads, 1,032 never read (docs/validation/h200-20261129-seed.md)
    cols = ["prefetch_hits", "prefetch_late"]
    assert d.loc[("predictive_prefetch", "program", 10.0), cols].tolist() == [956, 86]
    assert d.loc[("predictive_prefetch", "fcfs", 10.0), cols].tolist() == [547, 358]
    assert d.loc[("predictive_prefetch", "fcfs", 10.0), ["offloaded", "offloads_unread"]
                 ].tolist() == [905, 534]
    assert d.loc[("predictive_prefetch", "program", 3.0), ["offloaded", "offloads_unread"]
                 ].tolist() == [1050, 1032]
    # lease 4's at fcfs order: at JPS 3 every one of its 1,050 offloads went unread; at JPS 6
    # 550 turns found their KV prefetched and 500 came back before it had landed
    assert d.loc[("predictive_prefetch", "fcfs", 3.0), ["offloaded", "offloads_unread"]
                 ].tolist() == [1050, 1050]
    assert d.loc[("predictive_prefetch", "fcfs", 6.0), cols].tolist() == [550, 500]
    assert set(d.index.get_level_values("policy")) == {"predictive_prefetch"}
    # the prediction counters are in every cell but lease 1's (it predates them): the oracle
    # predicts the drawn 0.5 s; the gap the server sees is ~30 ms longer (the client's
    # turn-around between a reply and the next turn)
    p = res.predictions[res.predictions.tool == "(all)"].set_index(["policy", "sched", "jps"])
    assert list(p.index) == [("predictive_prefetch", "fcfs", 3.0),
                             ("predictive_prefetch", "fcfs", 6.0),
                             ("predictive_prefetch", "fcfs", 10.0),
                             ("predictive_prefetch", "program", 3.0),
                             ("predictive_prefetch", "program", 6.0)]
    assert p.loc[("predictive_prefetch", "fcfs", 10.0)].predictions == 1046
    assert ((p.bias_s > -0.05) & (p.bias_s < 0)).all()
    page = report.html(res, [])
    assert 'id="policies"' in page and 'id="table-decisions"' in page
    assert 'id="table-predictions"' in page and 'id="table-tier-log"' in page
    assert set(report.tables(res)) >= {"predictions", "decisions", "tier_log"}
