"""Trace replay: the LMCache agentic and TraceLab readers on the shipped samples, one job per
recorded session, the JPS axis (recorded starts scaled, or Poisson), determinism, random ids
per job, what a replay cuts or caps, and the planning errors."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import workloads
from harness.errors import ConfigError
from launch import plan, schema
from workloads import agent, io, traces
from workloads.__main__ import main as workloads_main
from workloads.errors import WorkloadError
from workloads.samples import make_samples

REPO = Path(__file__).resolve().parents[2]
LMCACHE = "workloads/samples/lmcache_agentic_sample.parquet"
TRACELAB = "workloads/samples/tracelab_sample.jsonl"
MODEL = {"first_token_id": 10, "vocab_size": 32000, "max_model_len": 32768}
WL = {"name": "t", "n_jobs": 12, "n_turns": 3, "first_prompt_tokens": 32,
      "tool_output_tokens": [8, 16], "completion_tokens": 4,
      "tool": {"dist": "fixed", "mean_s": 0.5, "sigma": 0.5, "file": None}, "seed": 42,
      "duration_s": None, "trace": None, "arrival": None}  # fmt: skip


def cell(jps=2.0, model=None, **workload):
    return OmegaConf.create({"workload": {**WL, **workload}, "model": {**MODEL, **(model or {})},
                             "jps": jps})  # fmt: skip


def read(path, fmt=None):
    return traces.sessions(f"workload.trace={path}", "workload.trace_format", path, fmt)


# --- the readers on the samples ---------------------------------------------------------------


def test_the_samples_are_what_make_samples_writes():
    """The shipped files are the script's tables (regenerate: python -m
    workloads.samples.make_samples)."""
    assert pq.read_table(REPO / LMCACHE).to_pylist() == pa.Table.from_pylist(
        make_samples.lmcache_rows(), schema=make_samples.LMCACHE_SCHEMA).to_pylist()
    lines = (REPO / TRACELAB).read_text().splitlines()
    assert [json.loads(x) for x in lines] == make_samples.tracelab_rows()


def test_lmcache_agentic_sample():
    fmt, found = read(LMCACHE)
    assert fmt.name == "lmcache_agentic" and not fmt.starts
    assert [s.key for s in found] == ["swebench__sample-org__widget-1234__minimax",
                                      "gaia__sample-task-0007__claude",
                                      "wildclaw__sample-chat-03__gemini"]  # fmt: skip
    swe, gaia, chat = found
    # characters / 4, rounded up, per message: system 7200 + task 2400 characters
    assert swe.first_tokens == 1800 + 600 and swe.start_s is None
    # tool results of 6800, 1900, 5200, 1100, 3300 characters (the replies are outputs)
    assert swe.appended == (1700, 475, 1300, 275, 825)
    assert swe.outputs == (96, 74, 88, 412, 81, 150)  # output_length per call
    assert swe.gaps == (0.21, 0.64, 18.7, 0.12, 41.3)  # the next call's pre_gap
    assert swe.tools == ("str_replace_editor", "execute_bash", "execute_bash",
                         "str_replace_editor", "execute_bash")  # fmt: skip
    assert gaia.appended == (1100, 3000, 975, 155) and gaia.gaps == (2.84, 1.37, 4.62, 0.92)
    assert chat.tools == ("read_file", "run_shell", "user", "read_file")  # a user follow-up
    assert chat.appended[2] == 85 and chat.gaps[2] == 21.4  # 340 characters, 21.4 s


def test_tracelab_sample():
    fmt, found = read(TRACELAB)
    assert fmt.name == "tracelab" and fmt.starts
    assert [s.key for s in found] == ["project_sample_a/claude:sample-0001",
                                      "project_sample_b/claude:sample-0002",
                                      "project_sample_c/codex:sample-0003"]  # fmt: skip
    a, b, c = found
    assert a.start_s == datetime(2026, 3, 2, 9, tzinfo=UTC).timestamp()
    assert (b.start_s - a.start_s, c.start_s - a.start_s) == (250.0, 690.0)
    assert a.first_tokens == 16240  # input_tokens_total of round 0
    # input growth less the previous output: tool results and the user's text
    assert a.appended == (1420, 610, 2050, 45, 1130, 38, 980)
    assert a.outputs == (180, 96, 122, 540, 88, 310, 120, 260)
    # the tool's latency; 48.2 s waiting for the user after a reply without tools
    assert a.gaps == (0.142, 0.388, 14.73, 0.095, 41.92, 48.2, 0.21)
    assert a.tools == ("Read", "Grep", "Bash", "Edit", "Bash", "user", "Read")
    # two tools in one round: the gap runs to the last result (WebSearch, emitted 0.35 s
    # before the Read, took 4.62 s), and is named by it
    assert b.gaps == (2.84, 1.91, 4.27, 1.37) and b.tools[2] == "WebSearch"
    assert c.tools == ("shell", "shell", "apply_patch", "shell", "shell")
    assert c.gaps == (0.31, 27.4, 0.12, 3.18, 58.6)


def test_tracelab_reads_the_gzipped_release_and_folders(tmp_path):
    import gzip

    gz = tmp_path / "syfi_coding_trace.jsonl.gz"
    gz.write_bytes(gzip.compress((REPO / TRACELAB).read_bytes()))
    assert read(str(gz))[1] == read(TRACELAB)[1]
    shards = tmp_path / "shards"
    shards.mkdir()
    rows = make_samples.lmcache_rows()
    for i, part in enumerate((rows[:4], rows[4:])):  # a session split across two shards
        table = pa.Table.from_pylist(part, schema=make_samples.LMCACHE_SCHEMA)
        pq.write_table(table, shards / f"train-0000{i}-of-00002.parquet")
    assert read(str(shards))[1] == read(LMCACHE)[1]


def lmcache_file(tmp_path, rows):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=make_samples.LMCACHE_SCHEMA), path)
    return str(path)


def test_a_rewritten_history_starts_a_new_job(tmp_path):
    rows = make_samples.lmcache_rows()[:3]  # one session's first three calls
    rows[2] = {**rows[2], "input": rows[2]["input"][:2] + rows[2]["input"][3:]}  # one dropped
    _, found = read(lmcache_file(tmp_path, rows))
    assert [s.key for s in found] == [rows[0]["session_id"], rows[0]["session_id"] + "#2"]
    assert [s.n_turns for s in found] == [2, 1]
    tl = make_samples.tracelab_rows()[:3]
    tl[2] = {**tl[2], "input_tokens_total": 1000}  # a compacted history
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tl))
    assert [s.n_turns for s in read(str(path))[1]] == [2, 1]


# --- replay: jobs, the JPS axis, determinism ----------------------------------------------------


def test_a_session_becomes_a_job_with_its_sizes_times_and_tools():
    w = workloads.build(cell(trace=TRACELAB))
    _, found = read(TRACELAB)
    for j, s in zip(w.jobs, found, strict=True):
        assert j.n_turns == s.n_turns and len(j.first_prompt) == s.first_tokens
        assert tuple(len(t) for t in j.tool_outputs) == s.appended
        assert [j.output_tokens(t) for t in range(1, j.n_turns + 1)] == list(s.outputs)
        assert [j.prompt_tokens(t) for t in range(1, j.n_turns + 1)] == [
            s.prompt_tokens(t) for t in range(1, s.n_turns + 1)]  # fmt: skip
        assert j.tool_s == s.gaps and j.tool_name(1) == s.tools[0] and j.tool_name(j.n_turns) == ""
    assert w.jobs[0].prompt_tokens(2) == 16240 + 180 + 1420
    assert all(10 <= x < 32000 for j in w.jobs for x in j.first_prompt)


def test_tracelab_arrives_at_its_recorded_starts_scaled_to_the_jps():
    s = {}
    for jps in (2.0, 4.0):
        w = workloads.build(cell(jps=jps, trace=TRACELAB))
        s[jps] = w.summary()
        # starts 0, 250, 690 s: recorded rate 2 / 690 jobs/s, scaled to the cell's JPS
        scale = (2 / 690) / jps
        assert [j.arrival_s for j in w.jobs] == pytest.approx([0, 250 * scale, 690 * scale])
    assert s[2.0]["arrival"] == "recorded" and s[2.0]["trace_jps"] == pytest.approx(2 / 690)
    assert s[4.0]["time_scale"] == pytest.approx(s[2.0]["time_scale"] / 2)
    assert "recorded times" in s[2.0]["jps_axis"] and "4 jobs/s" in s[4.0]["jps_axis"]
    assert s[2.0]["digest"] != s[4.0]["digest"]  # arrivals differ, sessions do not


def test_lmcache_sessions_start_as_a_poisson_process_at_the_jps():
    w = workloads.build(cell(jps=3.0, trace=LMCACHE))
    s = w.summary()
    assert (s["arrival"], s["trace_format"], s["trace_jps"], s["time_scale"]) == (
        "poisson", "lmcache_agentic", 0.0, None)  # fmt: skip
    assert "Poisson process at 3 jobs/s" in s["jps_axis"]
    assert s["token_counts"].startswith("estimated: ceil(characters / 4)")
    expected = agent.generate(OmegaConf.create({**WL, "n_jobs": 3}), 3.0, (10, 32000))
    assert [j.arrival_s for j in w.jobs] == [j.arrival_s for j in expected.jobs]
    p = workloads.build(cell(jps=3.0, trace=TRACELAB, arrival="poisson"))
    assert [j.arrival_s for j in p.jobs] == [j.arrival_s for j in expected.jobs]


@pytest.mark.parametrize("trace", [LMCACHE, TRACELAB])
def test_replay_is_deterministic_and_ids_are_random_per_job(trace):
    a, b = workloads.build(cell(trace=trace)), workloads.build(cell(trace=trace))
    assert a.digest() == b.digest()
    other = workloads.build(cell(trace=trace, seed=7))
    assert other.digest() != a.digest()
    assert [j.n_turns for j in other.jobs] == [j.n_turns for j in a.jobs]  # same sessions
    assert other.jobs[0].first_prompt != a.jobs[0].first_prompt  # other ids
    firsts = {j.first_prompt[:16] for j in a.jobs}
    assert len(firsts) == len(a.jobs)  # no two jobs share a prefix


def test_identical_sessions_get_their_own_ids(tmp_path, monkeypatch):
    one = make_samples.LMCACHE_SESSIONS[0]
    twins = [one, (one[0] + "-again", *one[1:])]
    monkeypatch.setattr(make_samples, "LMCACHE_SESSIONS", twins)
    w = workloads.build(cell(trace=lmcache_file(tmp_path, make_samples.lmcache_rows())))
    a, b = w.jobs
    assert [len(t) for t in a.tool_outputs] == [len(t) for t in b.tool_outputs]
    assert a.first_prompt != b.first_prompt and a.tool_outputs[0] != b.tool_outputs[0]


def test_sessions_picked_by_the_seed_and_gaps_capped():
    w = workloads.build(cell(trace=TRACELAB, trace_sessions=2))
    assert w.n_jobs == 2 and w.summary()["sessions_in_trace"] == 3
    assert w.digest() == workloads.build(cell(trace=TRACELAB, trace_sessions=2)).digest()
    capped = workloads.build(cell(trace=TRACELAB, trace_max_gap_s=10.0))
    assert max(g for j in capped.jobs for g in j.tool_s) == 10.0
    assert capped.summary()["gaps_capped"] == 5  # 14.73, 41.92, 48.2, 27.4, 58.6 s


def test_sessions_are_cut_to_the_models_context():
    w = workloads.build(cell(trace=LMCACHE, model={"max_model_len": 4000}))
    s = w.summary()
    assert s["max_model_len"] == 4000 and s["sessions_cut"] == 3 and s["sessions_too_long"] == 0
    for j in w.jobs:
        assert j.prompt_tokens(j.n_turns) + j.output_tokens(j.n_turns) <= 4000
    assert w.jobs[0].n_turns == 1  # 2400 + 96 fit; 2400 + 96 + 1700 + 74 do not
    with pytest.raises(WorkloadError, match=r"no session fits model.max_model_len=1000 \(the "
                       r"shortest first request needs 1055 tokens\)"):  # fmt: skip
        workloads.build(cell(trace=LMCACHE, model={"max_model_len": 1000}))


def test_a_trace_workload_writes_and_replays_as_a_kvbench_file(tmp_path):
    """python -m launch workload --out FILE writes a trace's jobs as kvbench's own file, with
    per-turn outputs and tool names; replayed at the same JPS it is the same workload."""
    w = workloads.build(cell(trace=TRACELAB))
    path = io.save(w, tmp_path / "replay.parquet")
    back = workloads.build(cell(trace=str(path)))
    assert back.summary()["trace_format"] == "kvbench"
    assert back.digest() == w.digest()
    assert back.jobs[0].tool_names == w.jobs[0].tool_names and back.jobs[0].completions


def test_old_workload_files_load_without_outputs_or_tool_names(tmp_path):
    w = workloads.build(cell())
    rows = [{k: v for k, v in r.items() if k not in ("completions", "tool_names")}
            for r in io._rows(w)]  # fmt: skip
    old = pa.schema([f for f in io.SCHEMA if f.name not in ("completions", "tool_names")])
    pq.write_table(pa.Table.from_pylist(rows, schema=old), tmp_path / "old.parquet")
    back = io.load(tmp_path / "old.parquet")
    assert back.digest() == w.digest() and back.jobs[0].completions == ()


def test_the_client_sends_the_tool_name_in_the_hint():
    src = (REPO / "harness" / "client.py").read_text()
    assert re.search(r"Hint\.for_turn\(str\(job\.job_id\)[^)]*\)[^)]*job\.tool_name\(turn\)\)",
                     src.replace("\n", " "))  # fmt: skip


# --- errors and the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"trace": LMCACHE, "arrival": "recorded"},
         "workload.arrival=recorded: this lmcache_agentic trace records no session start times; "
         "allowed for it: poisson"),
        ({"trace": LMCACHE, "trace_format": "tracelab"},
         f"workload.trace={LMCACHE}: not a tracelab trace"),
        ({"trace": LMCACHE, "trace_format": "csv"},
         "workload.trace_format=csv is unknown; allowed: kvbench, lmcache_agentic, tracelab"),
        ({"trace": TRACELAB, "trace_sessions": 0}, "workload.trace_sessions=0: must be a positive"),
        ({"trace": TRACELAB, "trace_max_gap_s": -1}, "workload.trace_max_gap_s=-1: must be a non"),
        ({"trace": "/nope.jsonl.gz"}, "workload.trace=/nope.jsonl.gz: no such file"),
    ],
)  # fmt: skip
def test_replay_refuses_in_one_line(over, needle):
    with pytest.raises(WorkloadError) as e:
        workloads.build(cell(**over))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_unreadable_trace_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_tokens_total": 5, "session_id": "s"}\nnot json\n')
    with pytest.raises(WorkloadError, match=r"cannot read it as a workload \(tracelab: JSONDec"):
        workloads.build(cell(trace=str(bad)))
    unknown = tmp_path / "other.jsonl"
    unknown.write_text('{"prompt": "hi"}\n')
    with pytest.raises(WorkloadError, match="not a trace of a known format .workload.trace_format"):
        workloads.build(cell(trace=str(unknown)))


def test_planning_refuses_bad_trace_keys(tmp_path):
    def make(*over):
        return plan.make([f"results_dir={tmp_path}", "policy=fcfs", "jps=1", *over],
                         today="20260101")  # fmt: skip

    with pytest.raises(ConfigError, match="expected one of .kvbench, lmcache_agentic, tracelab."):
        make("workload=lmcache_sample", "workload.trace_format=csv")
    with pytest.raises(ConfigError, match="records no session start times; allowed for it"):
        make("workload=lmcache_sample", "workload.arrival=recorded")
    assert not any(tmp_path.iterdir())
    p = make("workload=tracelab_sample", "jps=[1,2]")
    assert {workloads.build(c).summary()["arrival"] for c in p.configs.values()} == {"recorded"}
    assert schema.TraceFormat("tracelab") is schema.TraceFormat.tracelab
    assert [e.value for e in schema.TraceFormat] == list(traces.FORMATS)


def test_describe_says_what_the_jps_means():
    line = workloads.sources.describe(cell(trace=LMCACHE).workload)
    assert line == (f"trace {LMCACHE} (lmcache_agentic; all sessions, seed 42; poisson at the "
                    "cell's JPS)")  # fmt: skip
    line = workloads.sources.describe(cell(trace=TRACELAB, trace_sessions=2,
                                           trace_max_gap_s=30).workload)  # fmt: skip
    assert "(tracelab; 2 sessions, seed 42; recorded session starts scaled to the cell's JPS, " \
           "gaps capped at 30 s)" in line


def test_python_m_workloads_summarizes_a_trace(capsys):
    assert workloads_main([TRACELAB]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["sessions"], out["requests"], out["user_waits"]) == (
        "tracelab", 3, 19, 1)  # fmt: skip
    shell = out["tools"]["shell"]
    assert (shell["calls"], shell["max_s"]) == (4, 58.6)
    assert shell["slowest_10pct_time_share"] == pytest.approx(58.6 / (0.31 + 27.4 + 3.18 + 58.6),
                                                              abs=1e-4)  # fmt: skip
    assert workloads_main(["/nope.parquet"]) == 2
    assert np.isclose(out["tools"]["Bash"]["median_s"], (14.73 + 41.92) / 2)
