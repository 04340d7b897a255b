"""Two faults on one local sweep, one server start (issue 14, part 5; docs/reliability.md).

The sweep: policy fcfs, JPS 1 then JPS 150 on one shared server (cluster=local shares it; the
lower JPS runs first), ``workload.request_timeout_s=5``.

1. **A server that hangs mid-stream** (JPS 1 cell): the vLLM server's engine (engine core and
   worker) is stopped with SIGSTOP just after a request started streaming, for longer than the
   client's request time-out, then continued; the API process still accepts requests, which
   get no token either. Promise: no request waits forever; each one in flight ends
   at its time-out (status ``timeout``; a time-out is never retried: the server may still be
   working on it), its job fails and its later turns are ``not_sent`` rows, jobs that come
   later run normally, and the cell ends ``ok`` with the errors counted in its manifest.
2. **SIGKILL of everything the sweep started** (in the JPS 150 cell, after the JPS 1 cell is
   done), as a node losing its processes: every process that carries the sweep's environment
   (the launcher, the submitit controller, the cell process, the vLLM API server,
   multiprocessing's resource tracker) gets SIGKILL at once; vLLM's engine core and its
   worker, which rename themselves, must die with their parent (``harness/server_site``), and
   whatever of the sweep still runs after 10 s is killed and counted as left behind. Promise:
   the finished cell is byte-identical, no process is left, no file is half written,
   ``status`` shows the killed cell failed (not running) with a reason, and the same command
   reruns exactly that cell.

Every process of the sweep carries a mark in its environment (fault_helpers.MARK); the renamed
ones are found by their session and working folder, so none is missed.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
import urllib.request

import pandas as pd
import psutil
import pytest

from harness import records
from tests.conftest import run_launch
from tests.faults.fault_helpers import (
    api_key,
    carrying,
    describe,
    digest,
    half_written,
    kill_everything,
    launch,
    marked,
    new_mark,
    server_group,
    signal_all,
    wait_for,
)

pytestmark = pytest.mark.server

TIMEOUT_S = 5.0  # the client's request time-out in this sweep
STALL_S = TIMEOUT_S + 3  # the server hangs longer than that
SWEEP = ["cluster=local", "policy=fcfs", "jps=[1,150]", "workload.n_jobs=null",
         "workload.duration_s=14", "workload.completion_tokens=240",
         f"workload.request_timeout_s={TIMEOUT_S:g}", "experiment.name=faults_kill"]  # fmt: skip


def _url(server: psutil.Process) -> str:
    argv = server.cmdline()
    return f"http://{argv[argv.index('--host') + 1]}:{argv[argv.index('--port') + 1]}"


def _running_requests(url: str, key: str) -> float:
    req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))  # fmt: skip


def _stall_mid_stream(mark: str) -> tuple[float, float, list[str]]:
    """Stop the server's engine (SIGSTOP to the engine core and its workers) just after a
    request started generating, so its first tokens have streamed and the rest never comes;
    continue it STALL_S later. The API process keeps answering (its /metrics too): the client
    sees a stream that stops. Returns (stopped, continued) as Unix times, and what was stopped.
    """
    (api,) = [p for p in server_group(mark)
              if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())]  # fmt: skip
    url, key = _url(api), api_key(api)
    engine = api.children(recursive=True)
    assert any("EngineCore" in p.name() for p in engine), describe(engine)
    before = _running_requests(url, key)

    def started() -> bool:  # a request more than before: one has just been admitted
        nonlocal before
        now = _running_requests(url, key)
        new, before = now > before, now
        return new

    wait_for(started, 60, "a request to start", every=0.02)
    time.sleep(0.25)  # its prefill is done and some of its tokens have streamed
    signal_all(engine, signal.SIGSTOP)
    stopped = time.time()
    time.sleep(STALL_S)
    signal_all(engine, signal.SIGCONT)
    return stopped, time.time(), describe(engine)


def _renamed_vllm(p) -> bool:
    """vLLM's engine core or worker (``VLLM::EngineCore``, ``VLLM::Worker``...)."""
    with contextlib.suppress(psutil.Error):
        return " ".join(p.cmdline()).startswith("VLLM::") or p.name().startswith("VLLM::")
    return False


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    """Run the sweep; hang its server mid-stream in the JPS 1 cell; once that cell is done
    and the JPS 150 cell measures, SIGKILL every process of the sweep. Returns what was seen."""
    tmp = tmp_path_factory.mktemp("kill_and_hang")
    results = tmp / "results"
    args = ["sweep", *SWEEP, f"results_dir={results}", "--no-report"]
    mark, log = new_mark(), tmp / "launcher.log"
    launcher = launch(args, mark, log)
    seen: dict = {"args": args, "mark": mark, "log": log}
    try:
        sweep = wait_for(lambda: next(results.glob("*_faults_kill"), None), 120, "the sweep")
        wait_for(lambda: (sweep / "sweep.json").exists(), 60, "sweep.json")
        low = wait_for(lambda: next(sweep.glob("gpu=*/**/jps=1"), None), 120, "the JPS 1 cell")
        high = low.parent / "jps=150"
        wait_for(lambda: (low / records.PROGRESS).exists(), 300, "the JPS 1 cell to measure")
        seen["stopped"], seen["continued"], seen["stalled"] = _stall_mid_stream(mark)
        wait_for(lambda: records.is_done(low), 120, "the JPS 1 cell to end")
        wait_for(lambda: (high / records.PROGRESS).exists(), 120, "the JPS 150 cell to measure")
        time.sleep(2)
        seen["done_before"] = digest(low)
        seen["alive_before"] = describe(marked(mark, sweep))
        # Every process that carries the sweep's environment, but vLLM's engine core and
        # workers: they rename themselves (setproctitle), which usually, not always, hides the
        # mark in /proc/<pid>/environ. They are left to die with their parent, which is the
        # promise under test (no orphan); picking them by the mark made the test flaky in CI.
        victims = [v for v in carrying(mark) if not _renamed_vllm(v)]
        seen["killed"] = describe(victims)
        signal_all(victims, signal.SIGKILL)  # at once
        t0 = time.monotonic()
        seen["launcher_rc"] = launcher.wait(timeout=30)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not marked(mark, sweep), 10, "the rest to die with its parent",
                     every=0.1)  # fmt: skip
        seen["gone_s"] = time.monotonic() - t0
        seen["left"] = kill_everything(mark, sweep)  # each one an orphan
        seen["sweep"], seen["low"], seen["high"] = sweep, low, high
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        kill_everything(mark, results)
    print(log.read_text()[-3000:])
    return seen


def test_a_server_hung_mid_stream_times_out_each_request_and_the_cell_ends(faulted):
    low = faulted["low"]
    print("stalled:", *faulted["stalled"], sep="\n  ")
    man = json.loads((low / records.MANIFEST).read_text())
    turns = pd.read_parquet(low / "turns.parquet")
    jobs = pd.read_parquet(low / "jobs.parquet")
    t0 = man["client"]["t0_unix"]
    stop, cont = faulted["stopped"] - t0, faulted["continued"] - t0
    cols = ["job_id", "turn", "sent_s", "first_token_s", "last_token_s", "retries", "status",
            "error"]  # fmt: skip
    print(f"stall {stop:.2f}-{cont:.2f} s of the cell\n{turns[cols].to_string()}")
    # the cell ended, with a recorded status and the errors counted
    assert man["status"] == "ok" and records.is_done(low), man.get("error")
    timeouts = turns[turns.status == "timeout"]
    assert len(timeouts) >= 1, "no request timed out: the stall missed the requests"
    assert set(turns.status) <= {"ok", "timeout", "not_sent"}, turns.status.value_counts()
    assert man["client"]["error_rows"] == int((turns.status != "ok").sum())
    assert man["client"]["jobs_failed"] == int((jobs.status == "failed").sum()) >= 1
    assert man["client"]["retries"] == int(turns.retries.sum())
    # each stalled request ended at its time-out, not later, and was not retried
    waited = timeouts.last_token_s - timeouts.sent_s
    assert (waited >= TIMEOUT_S - 0.05).all() and (waited <= TIMEOUT_S + 1.5).all(), waited
    assert (timeouts.error == f"no complete answer in {TIMEOUT_S:g} s").all()
    assert (timeouts.retries == 0).all()
    # they are the requests the stall caught: in flight when it came, or sent during it
    assert ((timeouts.sent_s < cont) & (timeouts.sent_s + TIMEOUT_S > stop - 0.5)).all()
    # Whether one was caught after its first tokens (mid-stream) depends on where in its decode
    # the stop landed (tokens come in bursts, 2 shared cores): asserting it made the test flaky.
    # Those that were are held to the same promise as the others (above); say how many.
    mid = timeouts[timeouts.first_token_s.notna() & (timeouts.first_token_s < stop)]
    print(f"{len(timeouts)} stalled requests timed out, {len(mid)} of them mid-stream")
    # their jobs failed there; the later turns are rows that say why
    for _, t in timeouts.iterrows():
        job = jobs[jobs.job_id == t.job_id].iloc[0]
        assert job.status == "failed" and job.turns_done == t.turn - 1 and pd.isna(job.jct_s)
        later = turns[(turns.job_id == t.job_id) & (turns.turn > t.turn)]
        assert (later.status == "not_sent").all()
        assert later.error.str.contains("an earlier turn of the job failed").all()
    # the server served again once continued: jobs that came later ran to their end
    after = jobs[jobs.arrival_s > cont + 0.5]
    assert len(after) >= 1 and (after.status == "ok").all(), after.to_string()


def test_sigkill_of_every_process_of_the_sweep(faulted):
    sweep, low, high, mark = faulted["sweep"], faulted["low"], faulted["high"], faulted["mark"]
    print("running before the kill:", *faulted["alive_before"], sep="\n  ")
    print("SIGKILL at once:", *faulted["killed"], sep="\n  ")
    print(f"the rest gone {faulted['gone_s']:.1f} s later; left running: {faulted['left']}")
    killed, before = "\n".join(faulted["killed"]), "\n".join(faulted["alive_before"])
    for what in ("-m launch sweep", "submitit.local._local", "submitit.core._submit",
                 "vllm.entrypoints.openai.api_server"):  # fmt: skip
        assert what in killed, f"{what} was not among the processes killed"
    assert "VLLM::EngineCore" in before and "VLLM::EngineCore" not in killed
    assert faulted["launcher_rc"] == -signal.SIGKILL
    # nothing left running: the engine core and its worker died with their parent
    assert faulted["left"] == [], f"left running after the kill: {faulted['left']}"
    time.sleep(2)  # and nothing starts again
    assert not marked(mark, sweep), describe(marked(mark, sweep))
    # the finished cell is byte-identical; nothing is half written
    assert digest(low) == faulted["done_before"]
    assert half_written(sweep) == []
    assert not records.is_done(high)
    # status: the killed cell failed (it is not running), with a reason
    st = run_launch("status", str(sweep), timeout=120)
    print(st.stdout)
    assert st.returncode == 0, st.stdout + st.stderr
    assert re.search(r"2 cells: done 1, running 0, pending 0, failed 1", st.stdout), st.stdout
    (killed_row,) = [line.split("│") for line in st.stdout.splitlines() if "jps=150" in line]
    state, scheduler, detail = (x.strip() for x in killed_row[2:5])
    assert (state, scheduler) == ("failed", "ENDED (local)"), killed_row
    assert detail, "no reason given for the killed cell"
    # the same command reruns exactly the unfinished cell
    dry = run_launch(*faulted["args"], "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    plan = {line.split("│")[-2].strip(): line for line in dry.stdout.splitlines()
            if "jps=" in line and "│" in line}  # fmt: skip
    (row_low,) = [v for k, v in plan.items() if k.endswith("jps=1")]
    (row_high,) = [v for k, v in plan.items() if k.endswith("jps=150")]
    assert "done (skipped)" in row_low and "to run" in row_high, dry.stdout
    assert digest(low) == faulted["done_before"], "the dry run touched the finished cell"
