"""``python -m analysis cells``: a row per cell of one or more sweeps, as a markdown table
(analysis/celltable.py), on the records of two real runs (the H200 campaign's and the CPU
predictors evaluation's fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests import doctables

REPO = Path(__file__).resolve().parents[2]
H200 = REPO / "tests/fixtures/h200_seed/20261129_h200_sched"
CPU = REPO / "tests/fixtures/predictors_cpu/20261129_predictors_cpu"


def _cells(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "analysis", "cells", *args, "--bootstrap", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_two_sweeps_one_table_keyed_by_sweep_and_gpu(tmp_path):
    r = _cells(str(H200), str(CPU), "--csv", str(tmp_path / "cells.csv"))
    assert r.returncode == 0, r.stderr
    rows = doctables.rows(doctables.block(r.stdout))
    csv = pd.read_csv(tmp_path / "cells.csv")
    assert len(rows) == len(csv) == 31 + 9
    # two sweeps, two GPUs: both columns shown; one value each would leave them out
    assert {r["sweep"] for r in rows} == {H200.name, CPU.name}
    assert {r["gpu"] for r in rows} == {"h200", "cpu"}
    # every figure printed is the CSV's, rounded as printed
    for row, (_, c) in zip(rows, csv.iterrows(), strict=True):
        assert (row["policy"], row["sched"]) == (c.policy, c.sched)
        if row["state"] == "ok":
            assert doctables.num(row["mean JCT"]) == round(c.mean_jct_s, 1)
            assert doctables.num(row["cached share"]) == round(100 * c.cached_frac)
        else:
            assert row["mean JCT"] == "–" and pd.isna(c.mean_jct_s)
    failed = [r for r in rows if r["state"] != "ok"]
    assert [(r["policy"], r["dram GB"]) for r in failed] == [("native_offload", "100")]


def test_a_folder_that_is_not_a_sweep_is_a_clear_error(tmp_path):
    r = _cells(str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and str(tmp_path) in r.stderr
