"""One cell end to end against a real vLLM server on the CPU engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from omegaconf import OmegaConf

from harness import records
from harness.cellkey import iter_cell_dirs
from tests.conftest import REPO, run_launch, wait_for
from workloads import build as load_workload

pytestmark = pytest.mark.server


def cells(sweep: Path) -> list[Path]:
    return [d for d, _ in iter_cell_dirs(sweep) if (d / "manifest.json").exists()]


def server_procs(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = " ".join(p.info["cmdline"] or [])
            if "vllm.entrypoints.openai.api_server" in cmdline and marker in (p.info["cwd"] or ""):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_smoke_records_agree_with_the_workload(smoke_sweep):
    found = cells(smoke_sweep)
    assert len(found) == 6
    for d in found:
        assert (d / "DONE").exists()
        man = json.loads((d / "manifest.json").read_text())
        assert man["status"] == "ok"
        cfg = OmegaConf.create(man["config"])
        wl = load_workload(cfg)
        assert man["workload"]["digest"] == wl.digest()
        turns = pd.read_parquet(d / "turns.parquet")
        jobs = pd.read_parquet(d / "jobs.parquet")
        assert len(jobs) == wl.n_jobs and len(turns) == wl.n_jobs * cfg.workload.n_turns
        assert (turns.status == "ok").all() and turns.error.isna().all()
        for j in wl.jobs:
            t = turns[turns.job_id == j.job_id].sort_values("turn")
            assert list(t.turn) == list(range(1, j.n_turns + 1))
            assert list(t.prompt_tokens) == [j.prompt_tokens(k) for k in range(1, j.n_turns + 1)]
            assert list(t.server_prompt_tokens) == list(t.prompt_tokens)
            assert (t.completion_tokens == cfg.workload.completion_tokens).all()
            assert (t.sent_s >= t.arrival_s - 1e-6).all()
            assert (t.first_token_s >= t.sent_s).all() and (t.last_token_s >= t.first_token_s).all()
            ready = t.last_token_s.iloc[:-1].values + t.tool_s.iloc[:-1].values
            assert (t.sent_s.iloc[1:].values >= ready - 1e-3).all()
            row = jobs[jobs.job_id == j.job_id].iloc[0]
            assert row.jct_s == pytest.approx(t.last_token_s.iloc[-1] - j.arrival_s)
            assert row.arrival_s == pytest.approx(j.arrival_s)
        later = turns[turns.turn > 1]
        assert (later.cached_tokens > 0).mean() > 0.9, "the prefix cache helps inside a job"
        first = turns[turns.turn == 1]
        assert (first.cached_tokens == 0).all(), "random prompts: no cross-job reuse"
        m = pd.read_parquet(d / "metrics.parquet")
        assert {"vllm:prefix_cache_hits_total", "vllm:num_requests_running"} <= set(m.name)
        assert m.t_s.max() >= turns.last_token_s.max() - 1.5
        assert -5 < m.t_s.min() <= 0, "a baseline scrape just before t0, on the cell's clock"
        assert m.t_s.max() < turns.last_token_s.max() + 15
        assert man["client"]["jobs_ok"] == wl.n_jobs and man["client"]["lag_p99_s"] is not None
        assert man["server"]["argv"][1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert "127.0.0.1" in man["server"]["argv"]


def test_no_secret_in_manifest_or_logs(smoke_sweep):
    for d in cells(smoke_sweep):
        man = json.loads((d / "manifest.json").read_text())
        assert "VLLM_API_KEY" not in json.dumps(man)
        assert "--api-key" not in man["server"]["argv"]
        for f in d.iterdir():
            if f.is_file() and f.suffix in (".log", ".json"):
                assert "api_key" not in f.read_text().lower().replace("vllm_api_key", "")


def test_sweep_rerun_skips_complete_cells(smoke_sweep, results_root):
    before = {d: (d / "DONE").stat().st_mtime for d in cells(smoke_sweep)}
    r = run_launch("sweep", f"results_dir={results_root}", "--no-report", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every cell is complete; nothing to run" in r.stdout
    assert before == {d: (d / "DONE").stat().st_mtime for d in cells(smoke_sweep)}


def test_bad_server_flag_fails_fast_with_the_servers_error(tmp_path):
    t0 = time.monotonic()
    r = run_launch("cell", f"results_dir={tmp_path}", "jps=1", "policy=fcfs",
                   "experiment.name=badflag", "engine.extra_args=[--enforce-eager,--no-such-flag]",
                   timeout=300)  # fmt: skip
    assert r.returncode == 1
    assert "unrecognized arguments: --no-such-flag" in r.stdout
    assert time.monotonic() - t0 < 240
    (d,) = cells(tmp_path / next(tmp_path.iterdir()).name)
    assert json.loads((d / "manifest.json").read_text())["status"] == "failed"
    assert not (d / "DONE").exists()
    assert not server_procs(str(tmp_path))


def _launch_cell(tmp_path, name: str) -> subprocess.Popen:
    """`python -m launch cell` of a 30-job fcfs cell at JPS 1, as a scheduler would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "launch", "cell", f"results_dir={tmp_path}", "jps=1", "policy=fcfs",
         f"experiment.name={name}", "workload.n_jobs=30"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_server_killed_mid_cell_fails_the_cell_and_leaves_nothing(tmp_path):
    proc = _launch_cell(tmp_path, "kill")
    try:
        prog = wait_for(
            lambda: next(tmp_path.glob("*/gpu=*/**/progress.json"), None),
            400,
            "the cell to start",
        )
        wait_for(lambda: (p := records.read_progress(prog.parent)) and p.jobs_done >= 1, 120,
                 "a job to finish")  # fmt: skip
        (srv,) = server_procs(str(tmp_path))
        srv.kill()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    d = prog.parent
    assert proc.returncode == 1, out
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "failed" and "server exited" in man["error"]
    assert not (d / "DONE").exists()
    turns = pd.read_parquet(d / "turns.parquet")
    assert len(turns) == 30 * 4, "every turn of every job has a row"
    assert (turns.status == "ok").any() and (turns.status != "ok").any()
    bad = turns[turns.status != "ok"]
    assert bad.error.notna().all()
    jobs = pd.read_parquet(d / "jobs.parquet")
    assert (jobs.status == "failed").any() and jobs[jobs.status == "failed"].jct_s.isna().all()
    wait_for(lambda: not server_procs(str(tmp_path)), 30, "no server process left")


def test_sigterm_to_the_cell_stops_its_server(tmp_path):
    """A scheduler time-out or scancel: the cell unwinds and nothing of the server is left."""
    proc = _launch_cell(tmp_path, "term")
    try:
        wait_for(lambda: server_procs(str(tmp_path)), 120, "the server to start")
        time.sleep(5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    wait_for(lambda: not server_procs(str(tmp_path)), 40, "no server process left")
    (man,) = tmp_path.glob("*/gpu=*/**/manifest.json")
    assert json.loads(man.read_text())["status"] == "interrupted"
    assert not list(tmp_path.glob("**/.*.tmp")), "no half-written file"
