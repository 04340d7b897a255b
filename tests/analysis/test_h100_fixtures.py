"""The analysis on real GPU records: the two H100 validation sweeps of 2026-11-27 (issue 6),
reduced to fixtures by scripts/device/reduce_fixture.py (tests/fixtures/*/README.md).

Known answers are computed here straight from the parquet files with pandas, independently
of the analysis package, and the verdicts are the ones the runs showed (docs/validation/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RUN1 = FIX / "h100_20261127" / "20261127_h100_validation"  # first lease: one failed cell
RUN2 = FIX / "h100_20261127b" / "20261127_h100_validation"  # second lease: 16 cells, dram 8/64


@pytest.fixture(scope="module")
def run2() -> pipeline.Results:
    return pipeline.compute([RUN2], pipeline.Options(n_boot=400, seed=1, reference_policy="fcfs"))


def _cell(root: Path, dram: int, policy: str, jps: int) -> Path:
    return root / "gpu=h100" / f"dram={dram}" / f"policy={policy}" / f"jps={jps}"


def _row(df: pd.DataFrame, **key) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for k, v in key.items():
        m &= df[k] == v
    assert m.sum() == 1, (key, int(m.sum()))
    return df[m].iloc[0]


def test_every_cell_valid_and_jct_matches_the_records(run2):
    cells = run2.cells
    assert len(cells) == 16 and cells["valid"].all()
    assert set(cells["n_used"]) == {20}
    for d in sorted(RUN2.glob("gpu=h100/dram=*/policy=*/jps=*")):
        man = json.loads((d / "manifest.json").read_text())["cell"]
        jobs = pd.read_parquet(d / "jobs.parquet")
        ok = jobs[jobs["status"] == "ok"]
        r = _row(run2.jct, dram=man["dram"], policy=man["policy"], jps=float(man["jps"]))
        assert r["mean_jct_s"] == pytest.approx(ok["jct_s"].mean(), rel=1e-9)
        assert r["ci_lo_s"] < r["mean_jct_s"] < r["ci_hi_s"]


def test_winners_small_tier_predictive_prefetch_large_tier_native_offload(run2):
    w = run2.winners
    for jps in (3.0, 6.0):
        small = _row(w, dram=8, jps=jps)
        assert small["winner"] == "predictive_prefetch"
        assert small["runner_up"] == "native_offload"
        assert not small["tie"] and small["ci_hi"] < 0  # the margin's CI excludes 0
        large = _row(w, dram=64, jps=jps)
        assert large["winner"] == "native_offload" and not large["tie"]
        assert large["pct_vs_fcfs"] < -40


def test_transfer_bytes_include_the_plugins_counters(run2):
    """bytes_offload/onload: vLLM's offload counter for native_offload, the kvbench plugin's
    own counters for predictive_prefetch; both equal the counters' increase in metrics.parquet."""
    def increase(cell: Path, name: str, label: str | None = None) -> float:
        m = pd.read_parquet(cell / "metrics.parquet")
        m = m[m["name"] == name]
        if label:
            m = m[m["labels"].map(lambda s: json.loads(s).get("transfer_type") == label)]
        return float(sum(g["value"].max() - g["value"].min() for _, g in m.groupby("labels")))

    pp = _cell(RUN2, 64, "predictive_prefetch", 3)
    r = _row(run2.why, dram=64, policy="predictive_prefetch", jps=3.0)
    assert r["bytes_offload"] == pytest.approx(increase(pp, "kvbench:offload_bytes_total"))
    assert r["bytes_onload"] == pytest.approx(increase(pp, "kvbench:prefetch_bytes_total")
                                              + increase(pp, "kvbench:late_load_bytes_total"))
    assert r["bytes_offload"] > 1e11
    no = _cell(RUN2, 64, "native_offload", 3)
    r = _row(run2.why, dram=64, policy="native_offload", jps=3.0)
    assert r["bytes_offload"] == pytest.approx(increase(no, "vllm:kv_offload_total_bytes_total",
                                                        "GPU_to_CPU"))
    assert pd.isna(_row(run2.why, dram=64, policy="fcfs", jps=3.0)["bytes_offload"])


def test_hit_rate_above_one_is_warned_not_trusted(run2):
    ct = _row(run2.why, dram=64, policy="continuum_ttl", jps=3.0)
    assert ct["prefix_hit_rate"] > 1  # vLLM re-counts hits of waiting requests
    assert 0 < ct["cached_frac"] < 1
    assert any("prefix_hit_rate above 1" in w and "continuum_ttl" in w for w in run2.warnings)


def test_cached_share_is_what_the_responses_said(run2):
    for policy, dram in (("fcfs", 64), ("native_offload", 64), ("predictive_prefetch", 8)):
        turns = pd.read_parquet(_cell(RUN2, dram, policy, 3) / "turns.parquet")
        ok = turns[turns["status"] == "ok"]
        want = ok["cached_tokens"].sum() / ok["server_prompt_tokens"].sum()
        got = _row(run2.why, dram=dram, policy=policy, jps=3.0)["cached_frac"]
        assert got == pytest.approx(want)


def test_a_real_failed_cell_is_shown_failed_never_as_a_number():
    res = pipeline.compute([RUN1], pipeline.Options(n_boot=100))
    bad = _row(res.cells, policy="predictive_prefetch", jps=6.0)
    assert bad["state"] == "failed" and not bad["valid"]
    assert "SIGINT" in bad["note"]
    assert res.jct[(res.jct["policy"] == "predictive_prefetch") & (res.jct["jps"] == 6.0)].empty
    w = _row(res.winners, jps=6.0)
    assert (w["policies"], w["valid"]) == (4, 3)
    assert w["winner"] == "native_offload"


def test_folders_without_the_sched_axis_read_in_the_engines_order(run2):
    """The fixtures predate the sched axis: every cell, winner and comparison is sched=fcfs,
    and the figures name the policies alone (as before the axis)."""
    assert set(run2.cells["sched"]) == {"fcfs"}
    assert not run2.cells["path"].str.contains("sched=").any()  # the folders on disk
    w = run2.winners
    assert set(w["winner_sched"]) == {"fcfs"} and set(w["runner_up_sched"]) == {"fcfs"}
    assert set(w["fcfs_sched"].dropna()) == {"fcfs"} and set(run2.vs["vs_sched"]) == {"fcfs"}
    assert len(w) == 4 and set(w["policies"]) == {3, 5}  # dram 8: 3 policies, dram 64: 5
    assert (run2.ref_check["cell"].str.contains("/sched=fcfs/")
            | ~run2.ref_check["cell"].str.contains("policy=")).all()
