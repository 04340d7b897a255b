"""Every bad input of the hostile test (issue 14, rows 5-7) refused at planning: one line naming
the key and what is allowed (or why), exit status 2, nothing written, no traceback; from
``sweep`` (dry run and real), ``cell``, ``status`` and ``analysis``. A bug still shows its
traceback with ``--debug``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from launch import cli

CONF = Path(__file__).resolve().parents[2] / "conf"

# (overrides, what the one line must say)
PLANNING = [
    # 5. bad input that used to run the wrong experiment
    (["workload.n_turns=0"], "workload.n_turns=0: must be a positive number of turns"),
    (["workload.tool_output_tokens=[]"], "workload.tool_output_tokens=[]: must list at least one"),
    (["cluster.executor=slrum"], "expected one of [local, slurm]"),
    (["jps=[]"], "jps=[]: names no jps"),
    (["policy=[]"], "policy=[]: names no policy"),
    (["experiment.name=x/../../.."], "experiment.name=x/../../..: must be a plain folder name"),
    # 6. bad input that used to be refused only after a server start or after writing files
    (["workload.n_jobs=0"], "workload.n_jobs=0: must be a positive number of jobs"),
    (["workload.tool.dist=weird"],
     "expected one of [fixed, exponential, lognormal, file, empirical, fitted]"),
    (["workload.trace=/nope.parquet"], "workload.trace=/nope.parquet: no such file"),
    (["workload.tool.dist=file", "workload.tool.file=/nope.txt"],
     "workload.tool.file=/nope.txt: no such file"),
    (["workload.tool_output_tokens=[-5,10]"], "sizes must be positive numbers of tokens"),
    (["engine.kv_cache_space_gb=0.5"], "engine.kv_cache_space_gb=0.5: must be a whole number"),
    (["cluster.cpus_per_task=0"], "cluster.cpus_per_task=0: must be at least 1"),
    (["cluster.array_parallelism=0"], "cluster.array_parallelism=0"),
    (["cluster.max_requeue=-1"], "cluster.max_requeue=-1"),
    # 7. inputs that used to end in a raw traceback
    (["results_dir=/proc/x"], "results_dir: cannot write the sweep folder"),
    (["host=nohost.invalid"], "host='nohost.invalid' does not resolve"),
    (["engine.python=/nope/python"], "engine.python=/nope/python is not an executable"),
    # and its neighbours
    (["host=0.0.0.0"], "expose=true"),
    (["gpu=h900"], "gpu=h900 is unknown; allowed:"),
    (["policy=magic"], "policy=magic is unknown; allowed:"),
    (["jps=-1"], "jps=-1 is not a positive number"),
    (["dram=64"], "dram=64 asks for 68 GB of host memory"),
    (["cluster=nope"], "cluster=nope is unknown; allowed: auto,"),
    (["cluster=pace", "engine=vllm-cuda", "gpu=rtx5090", "dram=8", "workload=agent8",
      "engine.gpu_memory_utilization=0.4"],
     "engine.gpu_memory_utilization=0.4 on gpu=rtx5090 leaves no room for a KV cache"),
    (["model.max_model_len=512"], "tokens (prompt and output), more than model.max_model_len=512"),
]  # fmt: skip


def _main(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("over, needle", PLANNING, ids=[" ".join(o) for o, _ in PLANNING])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "submit"])
def test_refused_at_planning_in_one_line(tmp_path, capsys, over, needle, dry):
    rc, out = _main(capsys, "sweep", *(["--dry-run"] if dry else []), f"results_dir={tmp_path}",
                    *over)  # fmt: skip
    assert rc == 2, out
    line = _one_line(out)
    assert needle in line, line
    assert "Traceback" not in out
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_the_cell_verb_refuses_the_same_way(tmp_path, capsys):
    rc, out = _main(capsys, "cell", f"results_dir={tmp_path}", "jps=1", "policy=fcfs",
                    "workload.n_jobs=0")  # fmt: skip
    assert rc == 2 and "workload.n_jobs=0" in _one_line(out)
    assert not any(tmp_path.iterdir())


def test_a_config_file_that_is_not_yaml_is_named(tmp_path, capsys):
    bad = CONF / "experiment" / "zz_fault_broken_yaml.yaml"
    bad.write_text("name: broken\nmatrix: {gpu: [cpu\n")
    try:
        rc, out = _main(capsys, "sweep", "--dry-run", f"results_dir={tmp_path}",
                        "experiment=zz_fault_broken_yaml")  # fmt: skip
    finally:
        bad.unlink()
    assert rc == 2 and "zz_fault_broken_yaml.yaml, line 3: not valid YAML" in _one_line(out)


def test_status_of_a_truncated_progress_file_is_not_a_traceback(tmp_path, capsys):
    sweep = tmp_path / "s"
    cell = sweep / "gpu=cpu/dram=8/policy=fcfs/sched=fcfs/jps=1"
    cell.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps(
        {"kvbench_sweep": 1, "name": "s", "matrix": ["gpu=cpu/dram=8/policy=fcfs/sched=fcfs/jps=1"],
         "cells": {}, "submissions": []}))  # fmt: skip
    (cell / "progress.json").write_text('{"jobs_done": 3, "jobs_to')
    (cell / "manifest.json").write_text('{"status": "runn')
    rc, out = _main(capsys, "status", str(sweep))
    assert rc == 0 and "Traceback" not in out, out
    assert "1 cells" in out
    rc, out = _main(capsys, "status", str(tmp_path / "nope"))
    assert rc == 2 and "is not a sweep folder" in _one_line(out)


def test_analysis_refuses_in_one_line(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MPLBACKEND": "Agg"})  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_a_bug_is_one_line_and_its_traceback_shows_with_debug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cli.planmod, "make", boom)
    rc, out = _main(capsys, "sweep", "--dry-run")
    assert rc == 70 and "internal error: RuntimeError: simulated bug" in out
    assert "--debug" in out and "Traceback" not in out
    with pytest.raises(RuntimeError, match="simulated bug"):
        cli.main(["sweep", "--dry-run", "--debug"])
