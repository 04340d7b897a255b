"""The predictors evaluation (issue 16; docs/benchmarks/predictors.md): the analysis, run on
the run's records (tests/fixtures/predictors_cpu, reduced by scripts/device/reduce_fixture.py),
reproduces every figure of the page's first two tables, read from the page itself and compared
at the precision it prints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline
from tests import doctables

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/benchmarks/predictors.md"
SWEEP = REPO / "tests/fixtures/predictors_cpu/20261129_predictors_cpu"


def _table(heading: str) -> list[dict[str, str]]:
    return doctables.table(DOC, heading)


def _num(s: str) -> float:
    v = doctables.num(s)
    assert v is not None, s
    return v


def _close(printed: str, value: float) -> None:
    """``value`` printed at the precision of ``printed`` gives ``printed``."""
    digits = len(printed.split(".")[1].rstrip("%")) if "." in printed else 0
    assert round(value, digits) == pytest.approx(_num(printed), abs=10 ** -digits / 2 + 1e-9), \
        (printed, value)


@pytest.fixture(scope="module")
def res() -> pipeline.Results:
    return pipeline.compute([SWEEP], pipeline.Options(n_boot=1000, seed=1,
                                                      reference_policy="fcfs"))


def test_the_jct_table_is_the_analysis_of_the_records(res):
    rows = _table("## JCT, time in the server")
    assert {r["policy"] for r in rows} == set(res.cells["policy"]) and len(rows) == 9
    jct, why = res.jct.set_index("policy"), res.why.set_index("policy")
    vs = res.vs.set_index("policy")
    server = res.per_turn.groupby("policy")["mean_latency_s"].sum()
    lag = res.cells.set_index("policy")["lag_p99_s"]
    for r in rows:
        p = r["policy"]
        assert r["sched"] == jct.loc[p, "sched"]
        _close(r["mean JCT s"], jct.loc[p, "mean_jct_s"])
        _close(r["p90 JCT s"], jct.loc[p, "p90_jct_s"])
        _close(r["in server s/job"], server[p])
        _close(r["cached share"], 100 * why.loc[p, "cached_frac"])
        _close(r["lag p99 ms"], 1000 * lag[p])
        if p == "fcfs":
            assert r["vs fcfs"] == "–" and r["GB to host"] == "–"
            continue
        pct, ci = r["vs fcfs"].split(" ", 1)
        lo, hi = ci.strip("[]").split(", ")
        _close(pct, vs.loc[p, "pct"])
        _close(lo, vs.loc[p, "pct_lo"])
        _close(hi, vs.loc[p, "pct_hi"])
        _close(r["GB to host"], why.loc[p, "bytes_offload"] / 1e9)
        _close(r["GB back"], why.loc[p, "bytes_onload"] / 1e9)


def test_the_prediction_table_is_the_analysis_of_the_records(res):
    rows = _table("## Predictions and what came of them")
    pooled = res.predictions[res.predictions["tool"] == "(all)"].set_index("policy")
    dec = res.decisions.set_index("policy")
    assert {r["policy"] for r in rows} == set(pooled.index) and len(rows) == 7
    for r in rows:
        p = r["policy"]
        a, d = pooled.loc[p], dec.loc[p]
        _close(r["n"], a["predictions"])
        _close(r["bias s"], a["bias_s"])
        _close(r["MAE s"], a["mae_s"])
        _close(r["back before predicted"], 100 * a["early_share"])
        for col, name in (("prefetch hits", "prefetch_hits"), ("prefetch late", "prefetch_late"),
                          ("wasted prefetches", "wasted_prefetches"),
                          ("offloads unread", "offloads_unread")):
            _close(r[col], d[name])


def test_the_winner_is_the_one_the_page_names(res):
    w = res.winners.iloc[0]
    assert (w["winner"], w["runner_up"]) == ("fcfs", "predictive_p50")
    assert "winner at JPS 1, −0.5%" in DOC.read_text()
    assert isinstance(res.winners, pd.DataFrame)
