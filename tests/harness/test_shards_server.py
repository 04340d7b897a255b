"""The sharded client through the cell's own measuring path (``harness.cell._measure``: the
workload built from the config, the workers chosen, driven, the records and manifest written)
against one real vLLM CPU server shared by the module: two workers give the records one gives,
and a worker killed mid-run fails the cell with a one-line error, leaving no process."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness import cell as cellmod
from harness.errors import CellFailed
from launch import plan
from tests.conftest import spawned_children, wait_for
from tests.plugins import plugin_server as serving

pytestmark = pytest.mark.server

# 8 jobs x 3 turns of small prompts at 4 jobs/s, program order (every request carries its
# job's global rank as its priority, so the ranks are checked end to end).
SMALL = ["policy=fcfs", "sched=program", "jps=4", "workload.n_jobs=8", "workload.n_turns=3",
         "workload.first_prompt_tokens=64", "workload.tool_output_tokens=[32,48]",
         "workload.completion_tokens=4", "workload.tool.mean_s=0.2",
         "workload.request_timeout_s=60"]  # fmt: skip
# A job's first send vs its arrival, on 2 cores shared with the server and CI's other tier: a
# bound on a hang or a worker that ignores the schedule, not on the client's precision (that is
# bench/client_lag.py's figure; 0.25 s here left a GC pause or a throttled worker no room).
LAG_TOLERANCE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    srv = serving.start(tmp, ["--num-gpu-blocks-override", "512",
                              "--scheduling-policy", "priority"], {})  # fmt: skip
    try:
        yield srv
    finally:
        serving.stop(srv)


class Attached:
    """The module's server as ``_measure`` sees a cell's (``harness.server.Server``)."""

    def __init__(self, srv: serving.Server) -> None:
        self.url, self.api_key, self.proc = srv.url, "test-key", srv.proc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_size(self) -> int:
        return 0

    def log_since(self, offset: int) -> str:
        return ""


def measure(srv: serving.Server, root: Path, *over: str) -> tuple[Path, object]:
    """Plan one small cell and measure it with ``_measure``, as ``run_cells`` does; returns
    its folder and the exception it raised (None)."""
    p = plan.make([f"results_dir={root}", *SMALL, *over])
    cfg = p.configs[p.cells[0]]
    OmegaConf.update(cfg, "model.served_name", srv.model())
    d = p.cell_dir(p.cells[0])
    d.mkdir(parents=True)
    man = cellmod.manifest_head(cfg, attempt=1)
    try:
        cellmod._measure(cfg, d, man, Attached(srv), d)  # type: ignore[arg-type]
    except CellFailed as e:
        return d, e
    return d, None


def test_two_workers_record_what_one_records(server, tmp_path, caplog):
    caplog.set_level("INFO")
    one, err1 = measure(server, tmp_path / "one", "workload.client_workers=1")
    two, err2 = measure(server, tmp_path / "two", "workload.client_workers=2")
    assert err1 is None and err2 is None, (err1, err2)
    assert "client: 2 workers (workload.client_workers=2" in caplog.text
    mans = [json.loads((d / "manifest.json").read_text()) for d in (one, two)]
    assert [m["status"] for m in mans] == ["ok", "ok"] and (two / "DONE").exists()
    assert [m["client"]["workers"] for m in mans] == [1, 2]
    assert mans[1]["client"]["workers_basis"].startswith("workload.client_workers=2")
    jobs = [pd.read_parquet(d / "jobs.parquet") for d in (one, two)]
    turns = [pd.read_parquet(d / "turns.parquet") for d in (one, two)]
    same = ["job_id", "arrival_s", "n_turns", "turns_done", "status"]
    pd.testing.assert_frame_equal(jobs[0][same], jobs[1][same])
    same = ["job_id", "turn", "status", "prompt_tokens", "server_prompt_tokens",
            "completion_tokens", "priority", "arrival_s", "tool_s"]  # fmt: skip
    pd.testing.assert_frame_equal(turns[0][same], turns[1][same])
    assert (turns[1].status == "ok").all() and len(turns[1]) == 24
    assert sorted(turns[1].priority.unique()) == list(range(8)), "global ranks, not per worker"
    lags = [j.lag_s.to_numpy() for j in jobs]
    for lag in lags:
        assert ((lag >= 0) & (lag < LAG_TOLERANCE_S)).all(), lag
    assert abs(lags[0] - lags[1]).max() < LAG_TOLERANCE_S
    for t in turns:  # later turns wait for the one before and its tool time
        t = t.sort_values(["job_id", "turn"])
        later = t.turn > 1
        ready = (t.last_token_s + t.tool_s).shift(1)[later]
        assert (t.sent_s[later] >= ready - 1e-3).all()
    m = pd.read_parquet(two / "metrics.parquet")
    assert m.t_s.min() <= 0 < m.t_s.max(), "a baseline before t0, then the cell's clock"
    assert not spawned_children()


def test_a_worker_killed_mid_run_fails_the_cell_and_leaves_no_process(server, tmp_path):
    killed: list[int] = []

    def kill_a_worker() -> None:
        prog = wait_for(lambda: next(tmp_path.glob("**/progress.json"), None), 120, "progress")
        wait_for(lambda: _jobs_done(prog) >= 1, 60, "a job done", every=0.1)
        victim = max(spawned_children(), key=lambda p: p.pid)  # the second worker started
        killed.append(victim.pid)
        victim.kill()

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    d, err = measure(server, tmp_path, "workload.client_workers=2", "workload.n_jobs=12")
    killer.join(10)
    assert killed and err is not None
    line = (rf"client worker [12] of 2 \(pid {killed[0]}\) died: killed by SIGKILL; the cell's "
            rf"records are incomplete")  # fmt: skip
    assert re.search(line, str(err)) and "\n" not in str(err)
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "failed" and re.search(line, man["error"])
    assert man["client"]["workers"] == 2 and not (d / "DONE").exists()
    turns = pd.read_parquet(d / "turns.parquet")  # every job's rows: kept, aborted or lost
    assert len(turns) == 36 and len(pd.read_parquet(d / "jobs.parquet")) == 12
    lost = turns[turns.error.str.startswith("record lost: ", na=False)]
    assert len(lost) and (lost.status == "error").all()
    assert not spawned_children()


def _jobs_done(prog: Path) -> int:
    try:
        return json.loads(prog.read_text())["jobs_done"]
    except (OSError, ValueError, KeyError):
        return 0
