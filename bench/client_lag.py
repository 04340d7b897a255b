"""Benchmark of the agent client (harness.client.AgentClient): arrival lag and CPU per request.

    python bench/client_lag.py                  # the table: 100, 500, 2,000 conversations
    python bench/client_lag.py --conv 2000 --seed-conv --loop asyncio uvloop
    python bench/client_lag.py --mode burst     # all N jobs arriving within --window-s

Drives the real AgentClient against a minimal OpenAI-compatible stub in a separate process
(``bench/stub_server.py``: vLLM's streamed completion chunks, ``--itl-ms`` apart, after a
delay; ``--batched`` puts every stream's tokens on one global tick). The stub and the client
are pinned to different cores (``os.sched_setaffinity``, ``stub_server.assign_cores``): the
client has one core per worker where the machine has them, and the stub's CPU is not the
client's. ``--workers N [N ...]`` runs a row per worker count with
``harness.shards.make_client`` (1: the in-process AgentClient).
On a shared machine, ``--priority fifo`` (root) runs both as SCHED_FIFO, so that the client
really has its core; the kernel's real-time throttling still leaves others 5% of it.

A row is N concurrent conversations, N = the jobs alive at once, with the workload generator's
jobs (``workloads.agent.generate``: Poisson arrivals, ``--turns`` turns, fixed tool time).
``--mode steady`` (default): jobs arrive at ``--jps`` (10/s; the sweeps run 1 to 15) and the
stub's delay is set so that a job lives N / jps seconds (Little's law), as when a loaded server
holds N conversations; the request rate is jps x turns in every row, and what grows with N is
what the client holds open (connections, streams, timers, live objects). Lag is counted for the
jobs that arrive in the ``--measure-s`` after the first N / jps seconds, when N jobs are alive;
then the client is aborted (the rest would only drain). ``--mode burst`` (a stress test): N
jobs arrive within ``--window-s`` against a stub with a fixed ``--delay-ms``, all counted; the
request rate grows with N until the client's core is saturated. Each row runs in a fresh
client process.

Columns: ``alive`` (median jobs alive at the measured arrivals), arrival lag p50/p99/max in ms
(each job's first-request ``sent_s`` minus its arrival: ``JobRecord.start_s - arrival_s``,
the lag the client records),
``req/s`` and ``cpu`` (the client's CPU use, CPU s / wall s) in the measured window, ``cpu_ms``
(client CPU per request over the whole run: the CPU of the client process and its workers around
``AgentClient.run`` / requests), ``gc_ms`` (longest garbage-collector pause), error rows (0
expected), and ``load1`` (the machine's 1-minute load average, at the end of the row: the
machine is shared, so read the lag with it). "small" rows have small prompts (64 ids, +52 a
turn), so the ids' JSON does not dominate; "seed" rows have the seed's sizes (1,600 ids at turn
1, ~13K at turn 8, echoed back by the server in the first chunk) and run at ``--seed-jps``.

Goal (issue 3): p99 lag under 5 ms at 2,000 conversations on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from stub_server import assign_cores, claim_core, start_stub  # noqa: E402  (bench/ on sys.path)

GOAL_MS, GOAL_CONV = 5.0, 2000
STOP = "end of the measured window"

# ----------------------------------------------------------------------------- one row (client)

SHAPES = {  # first prompt, tool outputs (one per gap, shuffled), completion tokens
    "small": (64, [32], 20),
    "seed": (1600, [1024, 1280, 1536, 1792, 2048, 2304, 2560], 20),
}


def workload(shape: str, n_jobs: int, jps: float, turns: int, tool_s: float, seed: int = 42):
    """The row's jobs, from the workload generator (Poisson arrivals at ``jps``)."""
    from omegaconf import OmegaConf

    from launch.schema import ToolTimeConf, WorkloadConf
    from workloads import agent

    first, tools, comp = SHAPES[shape]
    conf = WorkloadConf(
        name=f"bench-{shape}",
        n_jobs=n_jobs,
        n_turns=turns,
        first_prompt_tokens=first,
        tool_output_tokens=tools,
        completion_tokens=comp,
        tool=ToolTimeConf(dist="fixed", mean_s=tool_s),
        seed=seed,
    )
    return agent.generate(OmegaConf.structured(conf), jps, (10, 32000))


def tree_cpu(proc) -> float:
    """CPU seconds of a process and all its descendants, alive or ended: each live process's
    own time plus the time of the children it has reaped (psutil ``cpu_times``)."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:  # ended between the listing and the read: its parent counts it
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def new_client(url: str, opts, workers: int):
    """``harness.shards.make_client`` where that module exists, else the in-process
    ``harness.client.AgentClient`` (one worker only)."""
    try:
        from harness.shards import make_client
    except ImportError:
        if workers != 1:
            raise SystemExit(f"--workers {workers}: harness.shards is not there yet") from None
        from harness.client import AgentClient

        return AgentClient(url, "bench-key", opts)
    return make_client(url, "bench-key", opts, workers)


def client_row(url: str, shape: str, n: int, a) -> dict:
    """One row, in this (fresh, pinned) process: run the client on the row's workload."""
    import gc

    import numpy as np
    import psutil

    from harness.client import ClientOptions

    claim_core(a.core, a.priority)
    wl = workload(shape, a.n_jobs, a.jps, a.turns, a.tool_ms / 1000)
    opts = ClientOptions(model="model", request_timeout_s=a.timeout_s)
    lo, hi = a.measure_s
    window: dict[str, tuple[float, float]] = {}
    pauses: list[tuple[float, float]] = []
    t_gc, t_run = [0.0], [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            t_gc[0] = time.perf_counter()
        else:
            pauses.append((t_gc[0], time.perf_counter() - t_gc[0]))

    me = psutil.Process()
    t0_mono = [0.0]

    def usage() -> tuple[float, float]:  # this process and its workers, if any
        return tree_cpu(me), time.perf_counter()

    async def drive():
        client = new_client(url, opts, a.workers)  # built in the loop, as harness.cell does

        async def sample() -> None:  # the client's CPU use in the measured window
            for key, t in (("lo", lo), ("hi", hi)):
                await client.started.wait()  # set with the client's clock (t0)
                t_run[0] = time.perf_counter() - client.now()
                await asyncio.sleep(max(0.0, t - client.now()))
                window[key] = usage()
            if a.stop_after:  # the rest would only drain: end the jobs still running
                client.abort(STOP)

        sampler = asyncio.create_task(sample())
        try:
            return await client.run(wl)
        finally:
            sampler.cancel()
            t0_mono[0] = time.perf_counter() - client.now()  # the clock the stub logs with

    gc.collect()
    gc.callbacks.append(on_gc)
    cpu0, w0 = usage()
    if a.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            res = runner.run(drive())
    else:
        res = asyncio.run(drive())
    cpu1, w1 = usage()
    gc.callbacks.remove(on_gc)

    # A job's start_s is its first turn's sent_s, but the client fills it in once that turn has
    # ended, and the run is cut at the window's end: read it from the turn, so that the jobs
    # whose first answer was still coming count too.
    first = {t.job_id: t.sent_s for t in res.turns if t.turn == 1 and t.sent_s is not None}
    jobs = [j for j in res.jobs if lo <= j.arrival_s < hi and j.job_id in first]
    lags = np.array([first[j.job_id] - j.arrival_s for j in jobs] or [math.nan]) * 1000
    starts = np.sort([j.arrival_s for j in res.jobs])
    ends = np.sort([j.end_s for j in res.jobs if j.end_s is not None])
    alive = [
        np.searchsorted(starts, j.arrival_s, "right") - np.searchsorted(ends, j.arrival_s, "right")
        for j in jobs
    ]
    sent = [t for t in res.turns if t.sent_s is not None]
    last = max(t.sent_s for t in sent)
    in_window = sum(lo <= t.sent_s < hi for t in sent)
    (c_lo, w_lo), (c_hi, w_hi) = window.get("lo", (cpu0, w0)), window.get("hi", (cpu1, w1))
    return {
        "shape": shape,
        "conv": n,
        "workers": a.workers,
        "cores": a.core or "-",
        "loop": a.loop,
        "jobs": len(res.jobs),
        "measured": len(jobs),
        "jps": a.jps,
        "alive": float(np.median(alive)) if alive else 0.0,
        "delay_ms": a.delay_ms,
        "lag_p50_ms": float(np.percentile(lags, 50)),
        "lag_p99_ms": float(np.percentile(lags, 99)),
        "lag_max_ms": float(lags.max()),
        "requests": len(sent),
        "req_per_s": in_window / (hi - lo),
        "cpu_use": (c_hi - c_lo) / (w_hi - w_lo),
        "cpu_ms_per_req": 1000 * (cpu1 - cpu0) / len(sent),
        # pauses while jobs were being sent: not the client's gc.collect() before its clock
        # starts, nor the full pass that may follow the run once its thresholds are back
        "gc_ms": 1000 * max((d for t, d in pauses if 0 < t - t_run[0] < min(hi, last)), default=0),
        "wall_s": w1 - w0,
        "errors": sum(
            t.status not in ("ok", "not_sent") and STOP not in t.error for t in res.turns
        ),
        "load1": os.getloadavg()[0],
        # for a stub-side lag (bench/client_peers.py): the client's t0 on CLOCK_MONOTONIC and
        # the scheduled arrivals (s after t0) of the jobs in the measured window
        "t0_mono": t0_mono[0],
        "arrivals": {j.job_id: j.arrival_s for j in res.jobs if lo <= j.arrival_s < hi},
    }


# ----------------------------------------------------------------------------- the table

COLS = [
    ("shape", "{}"),
    ("conv", "{}"),
    ("workers", "{}"),
    ("cores", "{}"),
    ("loop", "{}"),
    ("jps", "{:g}"),
    ("measured", "{}"),
    ("alive", "{:.0f}"),
    ("delay_ms", "{:.0f}"),
    ("lag_p50_ms", "{:.2f}"),
    ("lag_p99_ms", "{:.2f}"),
    ("lag_max_ms", "{:.1f}"),
    ("req_per_s", "{:.0f}"),
    ("cpu_use", "{:.2f}"),
    ("cpu_ms_per_req", "{:.2f}"),
    ("gc_ms", "{:.1f}"),
    ("errors", "{}"),
    ("load1", "{:.2f}"),
]
HEAD = {
    "delay_ms": "stub_delay_ms",
    "lag_p50_ms": "lag_p50_ms",
    "lag_p99_ms": "lag_p99_ms",
    "lag_max_ms": "lag_max_ms",
    "req_per_s": "req/s",
    "cpu_use": "cpu",
    "cpu_ms_per_req": "cpu_ms/req",
}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[dict]) -> str:
    cells = [[HEAD.get(c, c) for c, _ in COLS]] + [[f.format(r[c]) for c, f in COLS] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(COLS))]
    lines = ["  ".join(x.rjust(w[i]) for i, x in enumerate(r)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * x for x in w), *lines[1:]])


def plan(a, n: int, jps: float) -> dict:
    """A row's arrival rate, stub delay, job count and measured arrival window."""
    k = SHAPES["small"][2]  # completion tokens (the same for both shapes)
    if a.mode == "burst":
        jps = n / a.window_s
        return {"jps": jps, "delay_ms": a.delay_ms, "n_jobs": n, "measure_s": (0.0, math.inf)}
    life = n / jps  # Little's law: N alive at jps when a job lives N / jps seconds
    turn = (life - (a.turns - 1) * a.tool_ms / 1000) / a.turns  # request time of one turn
    delay_ms = 1000 * turn - (k - 1) * a.itl_ms
    if delay_ms < 0:
        raise SystemExit(
            f"{n} conversations at {jps:g} jobs/s: the jobs' tool times alone outlast "
            f"{life:.1f} s; use more conversations or a higher --jps"
        )
    return {
        "jps": jps,
        "delay_ms": delay_ms,
        "n_jobs": round(jps * (life + a.measure_s)),
        "measure_s": (life, life + a.measure_s),
    }


def row_argv(a, url: str, shape: str, n: int, row: dict, loop: str, workers: int) -> list[str]:
    """The command line of one row's client process (``--row``), less its ``--core``."""
    argv = [
        sys.executable,
        __file__,
        "--row",
        url,
        shape,
        str(n),
        "--loop",
        loop,
        "--workers",
        str(workers),
        "--jps",
        str(row["jps"]),
        "--n-jobs",
        str(row["n_jobs"]),
        "--turns",
        str(a.turns),
        "--tool-ms",
        str(a.tool_ms),
        "--timeout-s",
        str(a.timeout_s),
        "--delay-ms",
        str(row["delay_ms"]),
        "--measure",
        *map(str, row["measure_s"]),
        "--priority",
        a.priority,
    ]
    return argv + (["--stop-after"] if a.mode == "steady" else [])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--conv", type=int, nargs="*", default=[100, 500, 2000], help="small-prompt rows"
    )
    p.add_argument("--seed-conv", type=int, nargs="*", default=[500], help="seed-sized-prompt rows")
    p.add_argument(
        "--seed-jps",
        type=float,
        default=3.0,
        help="steady: job arrivals per second of the seed rows (each of their requests costs "
        "more CPU: 10/s saturates a core of the 2-core dev machine)",
    )
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        nargs="+",
        default=["asyncio"],
        help="event loop(s) to run each row with (harness.cell uses asyncio)",
    )
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="client worker processes, a row each (harness.shards.make_client; 1 is the "
        "in-process AgentClient); the client gets that many cores (assign_cores)",
    )
    p.add_argument("--mode", choices=["steady", "burst"], default="steady")
    p.add_argument("--jps", type=float, default=10.0, help="steady: job arrivals per second")
    p.add_argument(
        "--measure-s", type=float, default=30.0, help="steady: the measured arrival window"
    )
    p.add_argument(
        "--window-s", type=float, default=2.0, help="burst: all jobs arrive in this window"
    )
    p.add_argument("--delay-ms", type=float, default=50.0, help="burst: stub time to first token")
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--tool-ms", type=float, default=500.0, help="fixed tool time after each turn")
    p.add_argument("--itl-ms", type=float, default=10.0, help="stub: time between tokens")
    p.add_argument("--batched", action="store_true", help="stub: all streams' tokens on one tick")
    p.add_argument("--timeout-s", type=float, default=600.0, help="client per-request time-out")
    p.add_argument(
        "--priority",
        choices=["normal", "nice", "fifo"],
        default="normal",
        help="client and stub scheduling: fifo (SCHED_FIFO 10) or nice (-10) give "
        "them their cores on a shared machine (needs root)",
    )
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--fault", default="", help=argparse.SUPPRESS)
    p.add_argument("--core", help=argparse.SUPPRESS)
    p.add_argument("--row", nargs=3, metavar=("URL", "SHAPE", "N"), help=argparse.SUPPRESS)
    p.add_argument("--n-jobs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--measure", type=float, nargs=2, dest="measure_s_", help=argparse.SUPPRESS)
    p.add_argument("--stop-after", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.row:
        a.loop, a.measure_s, a.workers = a.loop[0], tuple(a.measure_s_), a.workers[0]
        print(json.dumps(client_row(a.row[0], a.row[1], int(a.row[2]), a)), flush=True)
        return

    cores = sorted(os.sched_getaffinity(0))
    s_core = assign_cores(cores, 1)[1]
    what = (
        f"jobs arrive at {a.jps:g}/s ({a.seed_jps:g}/s in seed rows), stub delay set for N "
        f"alive, measured over {a.measure_s:g} s"
        if a.mode == "steady"
        else f"N jobs arrive in {a.window_s:g} s, stub delay {a.delay_ms:g} ms"
    )
    print(
        f"# {a.mode}: {what}; {a.turns} turns, tool {a.tool_ms:g} ms, {a.itl_ms:g} ms between "
        f"tokens{' (batched)' if a.batched else ''}; stub on core(s) {s_core or '-'}, the "
        f"client's in the cores column, priority {a.priority}; {os.cpu_count()} cores, load "
        f"average {load()}",
        flush=True,
    )
    rows: list[dict] = []
    for shape, n in [("small", n) for n in a.conv] + [("seed", n) for n in a.seed_conv]:
        row = plan(a, n, a.jps if shape == "small" else a.seed_jps)
        stub, url = start_stub(row["delay_ms"], a.itl_ms, a.fault, s_core, a.batched, a.priority)
        try:
            for workers in a.workers:
                for loop in a.loop:
                    argv = row_argv(a, url, shape, n, row, loop, workers)
                    argv += ["--core", assign_cores(cores, workers)[0]]
                    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(table(rows).splitlines()[-1], flush=True)
        finally:
            stub.terminate()
            stub.wait()
    print()
    print(table(rows))
    big = [r for r in rows if r["conv"] >= GOAL_CONV]
    if big:
        ok = all(r["lag_p99_ms"] < GOAL_MS for r in big)
        print(
            f"\ngoal (p99 lag < {GOAL_MS:g} ms at {GOAL_CONV} conversations, one core): "
            f"{'met' if ok else 'NOT met'}; load average now "
            f"{load()}"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
