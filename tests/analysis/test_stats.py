import math

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from analysis.stats import Window
from tests.analysis import frames

A = ("h100", 400, "fcfs", 3.0)
B = ("h100", 400, "lmcache", 3.0)
C = ("h100", 400, "continuum", 3.0)


ALL = Window()


def _samples(jobs: pd.DataFrame, cells: pd.DataFrame, window: Window = ALL):
    return stats.job_samples(stats.window_jobs(jobs, window), cells[cells["valid"]])


def test_mean_and_percentiles_of_jct():
    jobs = frames.jobs({A: [float(x) for x in range(1, 11)]})
    s = _samples(jobs, frames.cells([A]))
    jct = stats.cell_jct(s, stats.bootstrap(s, 200, 0.95, seed=1))
    row = jct.iloc[0]
    assert row["n_used"] == 10
    assert row["mean_jct_s"] == pytest.approx(5.5)
    assert row["p90_jct_s"] == pytest.approx(9.1)
    assert row["p50_jct_s"] == pytest.approx(5.5)
    assert row["ci_lo_s"] < 5.5 < row["ci_hi_s"]


def test_failed_jobs_do_not_count():
    jobs = frames.jobs({A: [1.0, 2.0, 3.0, 100.0]})
    jobs.loc[3, ["status", "jct_s"]] = ["failed", np.nan]
    s = _samples(jobs, frames.cells([A]))
    assert s[frames.full(A)].tolist() == [1.0, 2.0, 3.0]


def test_window_drops_ramp_up_and_drain_by_arrival_order():
    jct = [float(x) for x in range(1, 11)]
    arrivals = {A: [9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}  # job 0 arrived last
    jobs = frames.jobs({A: jct}, arrivals=arrivals)
    s = _samples(jobs, frames.cells([A]), Window(head=0.1, tail=0.2))
    kept = s[frames.full(A)]
    # by arrival: job1 (first, dropped), jobs 2..8 kept, jobs 9 and 0 (last two) dropped
    assert kept.index.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert kept.mean() == pytest.approx(6.0)


def test_window_default_keeps_all_and_bad_window_fails():
    assert Window().is_all and "all jobs" in Window().describe()
    assert Window(0.1, 0.1).bounds(150) == (15, 135)
    with pytest.raises(ValueError, match="head"):
        Window(0.6, 0.5)


def test_tlast_over_t1_and_shapes():
    pt = frames.per_turn({A: [2, 4, 6, 8, 10, 12, 14, 16], C: [6, 5, 2, 2, 2, 2, 2, 2]})
    r = stats.turn_ratio(pt).set_index("policy")
    assert r.loc["fcfs", "tlast_over_t1"] == pytest.approx(8.0)
    assert r.loc["fcfs", "n_turns"] == 8
    assert r.loc["fcfs", "shape"] == "linear growth"
    assert r.loc["continuum", "tlast_over_t1"] == pytest.approx(2 / 6)
    assert r.loc["continuum", "shape"] == "spike, flat tail"
    assert r.loc["continuum", "peak_turn"] == 1


@pytest.mark.parametrize("means, shape", [
    ([1, 1.1, 0.9, 1.0, 1.05, 1.1, 1.0, 1.2], "flat"),
    ([1, 1.05, 1.1, 1.1, 1.3, 2.0, 4.0, 8.0], "flat, then wall"),
    ([1, 2, 3, 4, 5, 6, 7, 8], "linear growth"),
    ([3, 3.2, 1, 1, 1, 1, 1, 1], "spike, flat tail"),
    ([1, 2], "n/a"),
])
def test_classify_shape(means, shape):
    assert stats.classify_shape(np.array(means, float)) == shape


def _group(jcts: dict, **states):
    jobs = frames.jobs(jcts)
    cells = frames.cells(list(jcts), **states)
    s = _samples(jobs, cells)
    boot = stats.bootstrap(s, 1000, 0.95, seed=3)
    return cells, s, boot


def test_winner_margin_against_runner_up_and_reference():
    rng = np.random.default_rng(0)
    base = rng.normal(100, 10, 200)
    cells, s, boot = _group({A: list(base * 1.5), B: list(base * 0.69), C: list(base)})
    w = stats.winners(cells, s, boot).iloc[0]
    assert w["winner"] == "lmcache" and w["runner_up"] == "continuum"
    assert w["pct_vs_runner_up"] == pytest.approx(-31.0)
    assert w["pct_vs_continuum"] == pytest.approx(-31.0)
    assert not w["tie"]
    assert w["ci_lo"] <= -31.0 <= w["ci_hi"]
    assert w["verdict"].startswith("LMCache -31.0% vs Continuum")


def test_win_inside_the_noise_is_a_tie():
    rng = np.random.default_rng(1)
    a = rng.lognormal(3, 0.5, 150)
    b = a * rng.lognormal(0, 0.3, 150)  # same jobs, noisy, no systematic difference
    cells, s, boot = _group({B: list(b), C: list(a)})
    w = stats.winners(cells, s, boot).iloc[0]
    assert w["tie"], w.to_dict()
    assert w["ci_lo"] <= 0 <= w["ci_hi"]
    assert w["verdict"].startswith("tie:")


def test_winner_ignores_invalid_cells_and_names_them():
    cells, s, boot = _group({A: [1.0] * 10, B: [5.0] * 10, C: [9.0] * 10}, fcfs="lag")
    w = stats.winners(cells, s, boot).iloc[0]
    assert w["winner"] == "lmcache" and w["valid"] == 2
    assert "FCFS (lag)" in w["invalid"]


def test_winner_with_one_or_no_valid_cell():
    cells, s, boot = _group({A: [1.0] * 10, C: [9.0] * 10}, continuum="failed")
    assert stats.winners(cells, s, boot).iloc[0]["verdict"] == "only FCFS valid"
    cells, s, boot = _group({A: [1.0] * 10}, fcfs="missing")
    assert stats.winners(cells, s, boot).iloc[0]["verdict"] == "no valid cell"


def test_versus_reference_policy():
    cells, s, boot = _group({A: [12.0, 12.0, 12.0], C: [10.0, 10.0, 10.0]})
    v = stats.versus(s, boot).iloc[0]
    assert v["policy"] == "fcfs" and v["vs"] == "continuum"
    assert v["pct"] == pytest.approx(20.0) and v["paired"]


def test_bootstrap_is_deterministic_and_paired_is_tighter():
    rng = np.random.default_rng(5)
    a = rng.lognormal(3, 1.0, 300)
    b = a * 1.05 * rng.lognormal(0, 0.05, 300)  # strongly correlated with a
    r1 = stats.rel_diff(b, a, 500, 0.95, np.random.default_rng(7), paired=True)
    r2 = stats.rel_diff(b, a, 500, 0.95, np.random.default_rng(7), paired=True)
    ind = stats.rel_diff(b, a, 500, 0.95, np.random.default_rng(7), paired=False)
    assert r1 == r2
    assert (r1[2] - r1[1]) < (ind[2] - ind[1]) / 3
    assert r1[1] > 0  # a 5% slowdown is seen when paired


def test_no_bootstrap_means_no_ci_and_no_tie():
    cells, s, _ = _group({B: [1.0, 2.0], C: [1.0, 2.1]})
    boot = stats.bootstrap(s, 0)
    w = stats.winners(cells, s, boot).iloc[0]
    assert math.isnan(w["ci_lo"]) and not w["tie"]
    assert "[no CI]" in w["verdict"]


def test_not_comparable_when_n_differs():
    cells, s, boot = _group({B: [1.0] * 10, C: [2.0] * 12})
    w = stats.winners(cells, s, boot).iloc[0]
    assert not w["comparable"] and "not comparable" in w["verdict"]
