"""The analysis on the H200 scheduling-order run of 2026-11-29 (docs/validation/h200-20261129.md):
fcfs under both orders, 150 jobs per cell at the seed's scale, reduced to a fixture.

Known answers are computed here from the parquet files with pandas, independently of the
analysis package; the verdicts are the ones the run showed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline
from harness.cellkey import CellKey

SWEEP = Path(__file__).resolve().parents[1] / "fixtures/h200_20261129_sched/20261129_h200_sched"


def _jobs(sched: str, jps: int) -> pd.DataFrame:
    key = CellKey(gpu="h200", dram=64, policy="fcfs", sched=sched, jps=float(jps))
    return pd.read_parquet(SWEEP / key.rel_dir / "jobs.parquet")


@pytest.fixture(scope="module")
def res() -> pipeline.Results:
    return pipeline.compute([SWEEP], pipeline.Options(n_boot=400, seed=1))


def test_the_records_are_the_seeds_scale(res):
    assert len(res.cells) == 4 and res.cells["valid"].all()
    assert set(res.cells["sched"]) == {"fcfs", "program"}
    for sched in ("fcfs", "program"):
        for jps in (3, 10):
            jobs = _jobs(sched, jps)
            assert len(jobs) == 150 and (jobs.status == "ok").all()
            assert (jobs.n_turns == 8).all()


def test_mean_jct_is_the_records(res):
    for r in res.jct.to_dict("records"):
        want = _jobs(r["sched"], int(r["jps"]))["jct_s"].mean()
        assert r["mean_jct_s"] == pytest.approx(want)


def test_program_order_wins_at_jps_10_and_not_at_jps_3(res):
    w = res.winners.set_index("jps")
    at10 = w.loc[10.0]
    assert (at10["winner"], at10["winner_sched"]) == ("fcfs", "program")
    assert at10["pct_vs_runner_up"] < -50 and at10["ci_hi"] < -50  # 167 s -> 60 s
    at3 = w.loc[3.0]
    assert abs(at3["pct_vs_runner_up"]) < 10  # both orders reach the same reuse
    fcfs10, prog10 = _jobs("fcfs", 10)["jct_s"].mean(), _jobs("program", 10)["jct_s"].mean()
    assert fcfs10 / prog10 > 2.5


def test_program_order_flattens_the_later_turns(res):
    r = res.ratio.set_index(["sched", "jps"])
    assert r.loc[("fcfs", 10.0), "tlast_over_t1"] > 5  # FCFS grows turn over turn
    assert r.loc[("program", 10.0), "tlast_over_t1"] < 1  # one early wait, then flat
