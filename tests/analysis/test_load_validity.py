import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import validity
from analysis.load import KEYS, SweepError, load
from analysis.synth import build, cell_dir, key
from tests.analysis.conftest import FAULTS, small_spec


def test_load_reads_every_kind_with_hive_keys_and_sweep(synth_sweep):
    d = load([synth_sweep])
    assert set(d.turns["sweep"]) == {synth_sweep.name}
    assert d.turns["dram"].dtype == "int64" and d.turns["jps"].dtype == "float64"
    assert set(d.turns["gpu"]) == {"h200", "h100"}
    assert {"job_id", "turn", "latency_s", "cached_tokens", "status"} <= set(d.turns.columns)
    assert {"jct_s", "arrival_s", "status"} <= set(d.jobs.columns)
    assert {"t_s", "name", "labels", "value"} <= set(d.metrics.columns)
    # 2 x 2 x 3 x 3 cells named by the matrix, one of them without a folder
    assert len(d.cells) == 36
    assert d.cells["folder"].sum() == 35


def test_load_several_sweeps_keeps_them_apart(synth_sweep, clean_sweep):
    d = load([synth_sweep, clean_sweep], metric_names=["vllm:kv_cache_usage_perc"])
    assert set(d.cells["sweep"]) == {synth_sweep.name, clean_sweep.name}
    assert set(d.metrics["name"]) == {"vllm:kv_cache_usage_perc"}
    per = d.jobs.groupby("sweep").size()
    assert per[clean_sweep.name] == 1 * 1 * 3 * 2 * 12  # 1 GPU, 1 DRAM, 3 policies, 2 JPS


def test_states_of_faulty_cells(synth_sweep):
    d = load([synth_sweep])
    c = validity.assess(d.cells, d.jobs, d.turns).set_index(["gpu", "dram", "policy", "jps"])
    expect = {"jobs_failed": "jobs_failed", "missing": "missing", "lag": "lag",
              "unfinished": "unfinished", "failed": "failed", "nodata": "running"}
    for cell, fault in FAULTS.items():
        assert c.loc[cell, "state"] == expect[fault], cell
    assert c.loc[("h100", 400, "lmcache", 3.0), "valid"]  # unfinished: drawn, flagged
    assert not c.loc[("h200", 400, "fcfs", 6.0), "valid"]
    ok = c[c["state"] == "ok"]
    assert len(ok) == 36 - len(FAULTS)
    jf = c.loc[("h100", 64, "fcfs", 3.0)]
    assert jf["jobs_ok"] < jf["jobs_started"] == 12 and jf["turn_errors"] > 0
    assert "jobs ok" in jf["note"]
    assert "server died" in c.loc[("h200", 64, "continuum", 3.0), "note"]


def test_max_failed_frac_lets_a_few_failures_through(synth_sweep):
    d = load([synth_sweep])
    c = validity.assess(d.cells, d.jobs, d.turns, max_failed_frac=0.5)
    row = c[(c["gpu"] == "h100") & (c["dram"] == 64) & (c["policy"] == "fcfs") & (c["jps"] == 3)]
    assert row["state"].item() == "ok"


def test_running_sweep_without_done_and_without_matrix(tmp_path):
    sweep = build(small_spec(gpus=("h100",), drams=(64,), policies=("fcfs",), jps=(1.0, 3.0),
                             faults={("h100", 64, "fcfs", 3.0): "unfinished"}), tmp_path)
    (sweep / "sweep.json").unlink()
    d = load([sweep])
    c = validity.assess(d.cells, d.jobs, d.turns)
    assert sorted(c["state"]) == ["ok", "unfinished"]


def test_matrix_as_list_of_cell_paths(tmp_path):
    sweep = build(small_spec(gpus=("cpu",), drams=(8,), policies=("fcfs",), jps=(1.0,)), tmp_path)
    meta = {"name": "x", "matrix": ["gpu=cpu/dram=8/policy=fcfs/jps=1",
                                    "gpu=cpu/dram=8/policy=fcfs/jps=2"]}
    (sweep / "sweep.json").write_text(json.dumps(meta))
    d = load([sweep])
    c = validity.assess(d.cells, d.jobs, d.turns)
    assert dict(zip(c["jps"], c["state"], strict=True)) == {1.0: "ok", 2.0: "missing"}


def test_a_missing_records_column_is_reported_not_invented(tmp_path):
    spec = small_spec(gpus=("cpu",), drams=(8,), policies=("fcfs",), jps=(1.0,))
    sweep = build(spec, tmp_path)
    f = cell_dir(sweep, key("cpu", 8, "fcfs", 1.0)) / "turns.parquet"
    pq.write_table(pq.read_table(f).drop(["cached_tokens"]), f)
    d = load([sweep])
    assert d.missing_columns == {"turns": ["cached_tokens"]}
    assert d.turns["cached_tokens"].isna().all()


def test_not_a_sweep_fails_clearly(tmp_path):
    with pytest.raises(SweepError, match="neither sweep.json nor cell folders"):
        load([tmp_path])
    bad = tmp_path / "s" / "gpu=h100" / "dram=lots" / "policy=fcfs" / "jps=1"
    bad.mkdir(parents=True)
    with pytest.raises(SweepError, match="does not parse"):
        load([tmp_path / "s"])


def test_cell_label_is_the_folder_path():
    assert validity.cell_label({"gpu": "h100", "dram": 64, "policy": "fcfs", "jps": 3.0}) == \
        "gpu=h100/dram=64/policy=fcfs/sched=fcfs/jps=3"
    assert KEYS == ["sweep", "gpu", "dram", "policy", "sched", "jps"]
    assert isinstance(pd.DataFrame(), pd.DataFrame)


def test_done_without_data_is_no_data(tmp_path):
    spec = small_spec(gpus=("cpu",), drams=(8,), policies=("fcfs",), jps=(1.0, 2.0),
                      faults={("cpu", 8, "fcfs", 2.0): "nodata"})
    sweep = build(spec, tmp_path)
    (cell_dir(sweep, key("cpu", 8, "fcfs", 2.0)) / "DONE").write_text("ok\n")
    d = load([sweep])
    c = validity.assess(d.cells, d.jobs, d.turns)
    assert dict(zip(c["jps"], c["state"], strict=True)) == {1.0: "ok", 2.0: "no_data"}
