"""workloads.build: the arrival and source registries, traces and the JPS axis, and the
package's place (launch -> harness -> workloads, never back)."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import workloads
from launch import schema
from workloads import agent, arrivals, io, sources, tooltime
from workloads.errors import WorkloadError

PKG = Path(workloads.__file__).parent
LLAMA = {"first_token_id": 1000, "vocab_size": 128256}
SMALL = {"name": "t", "n_jobs": 12, "n_turns": 3, "first_prompt_tokens": 32,
         "tool_output_tokens": [8, 16], "completion_tokens": 4,
         "tool": {"dist": "fixed", "mean_s": 0.5, "sigma": 0.5, "file": None}, "seed": 42,
         "duration_s": None, "trace": None, "arrival": None}  # fmt: skip


def cell(jps=3.0, model=None, **workload):
    """A cell config as the harness gets it (untyped: a manifest's or a submitted YAML)."""
    wl = {**SMALL, **workload}
    return OmegaConf.create({"workload": wl, "model": model or LLAMA, "jps": jps})


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_workloads_imports_neither_harness_nor_launch():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) >= 6
    for f in files:
        back = imports_of(f) & {"harness", "launch", "analysis"}
        where = f.relative_to(PKG.parent)
        assert not back, f"{where} imports {back}: launch -> harness -> workloads only"


def test_the_schema_enums_are_the_registries():
    assert [e.value for e in schema.Arrival] == list(arrivals.ARRIVALS)
    assert [e.value for e in schema.ToolDist] == list(tooltime.KINDS)
    assert set(sources.SOURCES) == {"generated", "trace"}


def test_arrival_registry(monkeypatch):
    monkeypatch.setattr(arrivals, "ARRIVALS", dict(arrivals.ARRIVALS))

    @arrivals.register("uniform")
    def uniform(rng, jps, n, trace=None):
        return np.arange(n) / jps

    assert arrivals.get("uniform") is uniform
    w = workloads.build(cell(jps=4.0, arrival="uniform"))
    assert [j.arrival_s for j in w.jobs[:3]] == [0.0, 0.25, 0.5]
    assert w.summary()["arrival"] == "uniform"
    needle = "workload.arrival=bursty is unknown; allowed: poisson, recorded, uniform"
    with pytest.raises(WorkloadError, match=needle):
        arrivals.get("bursty")


def test_recorded_needs_a_trace():
    with pytest.raises(WorkloadError, match="workload.arrival=recorded: only a trace"):
        workloads.build(cell(arrival="recorded"))


def test_build_is_generate_for_generated_jobs():
    cfg = cell(jps=2.0)
    w = workloads.build(cfg)
    assert w.digest() == agent.generate(cfg.workload, 2.0, (1000, 128256)).digest()
    s = w.summary()
    assert (s["source"], s["arrival"], s["jps"], s["n_jobs"]) == ("generated", "poisson", 2.0, 12)
    assert workloads.build(cell(jps=2.0, arrival="poisson")).digest() == w.digest()
    assert all(1000 <= x < 128256 for j in w.jobs for x in j.first_prompt)


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"n_jobs": 0}, "workload.n_jobs=0: must be a positive number of jobs"),
        ({"n_jobs": None}, "workload.duration_s=null: with workload.n_jobs=null"),
        ({"n_turns": 0}, "workload.n_turns=0: must be a positive number of turns"),
        ({"tool_output_tokens": []}, "workload.tool_output_tokens=[]: must list at least one"),
        ({"tool_output_tokens": [8, -1]}, "sizes must be positive numbers of tokens (got -1)"),
        ({"completion_tokens": 0}, "workload.completion_tokens=0"),
        ({"seed": -1}, "workload.seed=-1"),
        ({"tool": {"dist": "expo", "mean_s": 1}},
         "workload.tool.dist=expo is unknown; allowed: fixed"),
        ({"tool": {"dist": "exponential", "mean_s": 0}},
         "workload.tool.mean_s=0: must be a positive"),
        ({"tool": {"dist": "file", "file": None, "mean_s": 1}},
         "workload.tool.file=null: must name a file"),
        ({"tool": {"dist": "file", "file": "/nope.txt", "mean_s": 1}},
         "workload.tool.file=/nope.txt: cannot read"),
    ],
)  # fmt: skip
def test_build_refuses_what_cannot_make_jobs(over, needle):
    with pytest.raises(WorkloadError) as e:
        workloads.build(cell(**over))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_one_turn_jobs_need_no_tool_sizes():
    w = workloads.build(cell(n_turns=1, tool_output_tokens=[]))
    assert all(j.n_turns == 1 and j.tool_outputs == () for j in w.jobs)


def test_vocabulary_must_exceed_the_first_id():
    needle = "model.vocab_size=10: must exceed model.first_token_id=10"
    with pytest.raises(WorkloadError, match=needle):
        workloads.build(cell(model={"first_token_id": 10, "vocab_size": 10}))


# --- traces and the JPS axis ----------------------------------------------------------------


@pytest.fixture
def written(tmp_path):
    """A cell's jobs written to a file at JPS 3 (what ``python -m launch workload`` does)."""
    w = workloads.build(cell(jps=3.0, tool={"dist": "exponential", "mean_s": 0.5}))
    return w, io.save(w, tmp_path / "w.parquet")


@pytest.mark.parametrize("arrival", [None, "recorded", "poisson"])
def test_a_written_cell_replays_exactly_at_its_jps(written, arrival):
    w, path = written
    r = workloads.build(cell(jps=3.0, trace=str(path), arrival=arrival))
    assert r.digest() == w.digest()
    s = r.summary()
    assert s["source"] == "trace" and s["trace"] == str(path) and s["jps"] == 3.0
    assert s["arrival"] == (arrival or "recorded")


def test_a_trace_at_another_jps_keeps_its_jobs_and_scales_its_arrivals(written):
    w, path = written
    r = workloads.build(cell(jps=6.0, trace=str(path)))
    assert [j.first_prompt for j in r.jobs] == [j.first_prompt for j in w.jobs]
    assert [j.tool_s for j in r.jobs] == [j.tool_s for j in w.jobs]
    assert [j.arrival_s for j in r.jobs] == pytest.approx([j.arrival_s / 2 for j in w.jobs])
    s = r.summary()
    assert (s["jps"], s["trace_jps"], s["time_scale"]) == (6.0, 3.0, 0.5)
    p = workloads.build(cell(jps=6.0, trace=str(path), arrival="poisson"))
    fresh = workloads.build(cell(jps=6.0))
    assert [j.arrival_s for j in p.jobs] == [j.arrival_s for j in fresh.jobs]
    assert p.summary()["time_scale"] is None


def test_a_trace_without_a_declared_rate_is_scaled_by_its_own(tmp_path, written):
    """A real agent trace (no kvbench metadata): its rate is (n-1) / span."""
    w, _ = written
    path = tmp_path / "real.jsonl"
    rows = [{**r, "arrival_s": 100.0 + 2.0 * i} for i, r in enumerate(io._rows(w))]  # 0.5 jobs/s
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = workloads.build(cell(jps=2.0, trace=str(path)))
    times = [j.arrival_s for j in r.jobs]
    assert times[0] == 0.0 and np.diff(times) == pytest.approx(0.5)
    assert r.summary()["trace_jps"] == pytest.approx(0.5) and r.summary()["time_scale"] == 0.25


def test_trace_errors_name_the_file(tmp_path, written):
    _, good = written
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path, needle in [
        ("/nope.parquet", "workload.trace=/nope.parquet: no such file"),
        (str(tmp_path / "w.csv"), "allowed suffixes: .parquet, .jsonl"),
        (str(bad), "cannot read it as a workload"),
        (str(empty), "holds no jobs"),
    ]:
        with pytest.raises(WorkloadError) as e:
            workloads.build(cell(trace=path))
        assert needle in str(e.value) and "\n" not in str(e.value), path
    tiny = {"first_token_id": 10, "vocab_size": 32000}
    needle = r"token id \d+ outside the model's vocabulary \[0, 32000\)"
    with pytest.raises(WorkloadError, match=needle):
        workloads.build(cell(trace=str(good), model=tiny))


def test_relative_workload_files_are_from_the_repo_root(tmp_path, monkeypatch):
    from workloads import paths

    monkeypatch.setattr(paths, "REPO", tmp_path)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "times.txt").write_text("0.1 0.2\n")
    w = workloads.build(cell(tool={"dist": "file", "file": "tools/times.txt", "mean_s": 1}))
    assert w.jobs[0].tool_s == (0.1, 0.2)
