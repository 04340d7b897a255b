"""kvbench's client beside its peers, in one run, against the same stub server.

    python bench/client_peers.py                                   # both rows, every tool
    python bench/client_peers.py --rows small --tools kvbench --workers 1 2
    python bench/client_peers.py --skip-missing --workers 1 2 4 8  # where no peer is installed

A row is a load: ``small`` is 2,000 open conversations of small prompts at 10 jobs/s x 8 turns
= 80 requests/s; ``seed`` is the seed's JPS 15 (120 requests/s) with seed-sized prompts (1,600
ids, ~1.8K appended a turn, 20 out), 500 conversations. Each row starts one stub
(``client_lag.py``'s, stub delay set by Little's law for that many conversations) and drives it
with each tool in turn:

- ``kvbench``: the real client on the real workload generator's jobs (``client_lag.py --row``),
  once per ``--workers`` (``harness.shards.make_client``; 1 = the in-process AgentClient);
- the peers (``peer_tools.py``: ``vllm bench serve``, guidellm, aiperf, inference-perf), which
  are single-turn: each sends ``rate x (warm-up + --measure-s)`` requests at the same request
  rate (Poisson), each with the mean prompt of the row's kvbench requests (small: 246 tokens,
  seed: 7,948) and 20 output tokens, to the same stub (same delay: as many streams open).

Columns (README.md defines them in full): ``target``/``rate`` (requests/s asked and arrived at
the stub in the measured window), ``own_p50/p99`` (the tool's own arrival-lag figure: kvbench
``sent_s - arrival_s`` of each job's first request; guidellm ``request_start -
targeted_start``), ``stub_p50/p99`` (arrival at the stub minus the tool's schedule: kvbench
first requests against the workload's arrivals; vllm bench against its recovered Poisson
schedule, offset by its least-late request), ``ks`` (Kolmogorov-Smirnov distance of the
open-loop inter-arrival gaps at the stub from the exponential of the target rate; ``ks95`` its
95% critical value), ``cpu`` (the tool's process tree, CPU s per wall s) and ``cpu_ms/req``
(tree CPU / requests arriving, both in the measured window), ``errors``, ``load1``.

Cores (``stub_server.assign_cores``): the stub on the last core, the client on the first
``workers`` others (shared with the stub where too few); each peer on the first ``--peer-cores``
(default: the most workers asked). This script samples the trees' CPU from the stub's core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import client_lag as cl  # noqa: E402  (bench/ is on sys.path: this script's folder)
import peer_tools as pt  # noqa: E402
import stub_server  # noqa: E402

ROWS = {"small": ("conv", "jps"), "seed": ("seed_conv", "seed_jps")}
GOAL_MS = 5.0

# ----------------------------------------------------------------------------- measuring


class TreeCPU(threading.Thread):
    """Samples the CPU seconds of a process tree every ``every`` s: [(monotonic, cpu)]."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every = psutil.Process(pid), every
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic(), cl.tree_cpu(self.proc)))
            except psutil.Error:
                return
            self.done.wait(self.every)

    def between(self, lo: float, hi: float) -> float:
        """CPU seconds used between two monotonic times (interpolated)."""
        t, c = np.array(self.samples).T if self.samples else (np.zeros(1), np.zeros(1))
        return float(np.interp(hi, t, c) - np.interp(lo, t, c))


def run_tree(argv: list[str], cores: str, log: Path, env: dict[str, str] | None = None):
    """Run ``argv`` pinned to ``cores`` with its CPU sampled; (returncode, sampler, stdout)."""

    def pin() -> None:
        stub_server.claim_core(cores, "normal")

    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=out, text=True, preexec_fn=pin,
            env={**os.environ, **(env or {})}, cwd=REPO,
        )  # fmt: skip
        cpu = TreeCPU(proc.pid)
        cpu.start()
        stdout, _ = proc.communicate()
        cpu.done.set()
        cpu.join()
    log.write_text(log.read_text() + stdout[-20000:])
    return proc.returncode, cpu, stdout


def stub_log(url: str) -> list[tuple[float, int, int, str]]:
    import httpx

    return [tuple(x) for x in httpx.get(f"{url}/kvb/log", timeout=30).json()]


def ks(arrivals: np.ndarray, rate: float) -> tuple[float, float]:
    """KS distance of the gaps between sorted arrivals from Exp(rate), and its 95% bound."""
    gaps = np.sort(np.diff(np.sort(arrivals)))
    if len(gaps) < 2:
        return math.nan, math.nan
    n = len(gaps)
    cdf = 1 - np.exp(-rate * gaps)
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    return float(d), 1.36 / math.sqrt(n)


def pcts(lags_s: list[float] | np.ndarray) -> tuple[float, float]:
    if len(lags_s) == 0:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(lags_s) * 1000, [50, 99])
    return float(p50), float(p99)


STUB: list[TreeCPU] = []  # the row's stub, sampled as the tools are


def window_row(log, cpu: TreeCPU, lo: float, hi: float, open_t: np.ndarray, rate: float) -> dict:
    """What every tool's row has: the stub's arrivals and the tree's CPU in [lo, hi), and the
    stub's CPU use (if it were near 1, the stub would be what is late)."""
    t = np.array([x[0] for x in log])
    n = int(np.sum((t >= lo) & (t < hi)))
    d, d95 = ks(open_t[(open_t >= lo) & (open_t < hi)], rate)
    busy = cpu.between(lo, hi)
    return {
        "rate": n / (hi - lo),
        "ks": d,
        "ks95": d95,
        "cpu_use": busy / (hi - lo),
        "cpu_ms_per_req": 1000 * busy / max(n, 1),
        "requests": n,
        "stub_cpu": STUB[0].between(lo, hi) / (hi - lo) if STUB else math.nan,
        "load1": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------- one tool


def kvbench_row(a, url: str, shape: str, n: int, plan: dict, workers: int, tmp: Path) -> dict:
    client, _ = stub_server.assign_cores(a.cores, workers)
    argv = [*cl.row_argv(a, url, shape, n, plan, "asyncio", workers), "--core", client]
    rc, cpu, out = run_tree(argv, client, tmp / f"kvbench-w{workers}.log")
    if rc:
        return {"note": f"failed (exit {rc}): see {tmp}/kvbench-w{workers}.log"}
    r = json.loads(out.strip().splitlines()[-1])
    log = stub_log(url)
    t0, (lo, hi) = r["t0_mono"], plan["measure_s"]
    first: dict[int, float] = {}
    for t, job, turn, _ in log:
        if turn == 1:
            first.setdefault(job, t)  # a retried first request counts from its first attempt
    due = {int(j): t0 + s for j, s in r["arrivals"].items()}
    stub_lags = [first[j] - d for j, d in due.items() if j in first]
    row = window_row(log, cpu, t0 + lo, t0 + hi, np.array(list(first.values())), plan["jps"])
    own = (r["lag_p50_ms"], r["lag_p99_ms"])
    return {**row, "own": own, "stub": pcts(stub_lags), "errors": r["errors"], "cores": client}


def stub_lags(rep: dict, log: list, arrivals: np.ndarray) -> tuple[float, float]:
    """A peer's arrivals at the stub minus its schedule, where it says what that was."""
    if "schedule" in rep:  # vllm bench: request i (its x-request-id) against schedule[i], the
        sched = rep["schedule"]  # schedule's start being when the least late one was due
        lag = np.array([x[0] - sched[int(x[3].rsplit("-", 1)[1])] for x in log if x[3]])
        return pcts(lag - lag.min()) if len(lag) else (math.nan, math.nan)
    if "due_unix" in rep:  # guidellm: its targeted starts, on the wall clock; matched by rank
        due = np.sort(rep["due_unix"]) - (time.time() - time.monotonic())
        if len(due) == len(arrivals):
            return pcts(arrivals - due)
    return math.nan, math.nan


def peer_row(a, tool: pt.Tool, url: str, rate: float, input_len: int, warm: float, tmp: Path):
    cores = stub_server.assign_cores(a.cores, a.peer_cores)[0]
    out = tmp / tool.name
    out.mkdir()
    job = pt.Job(
        url=url, rate=rate, n=round(rate * (warm + a.measure_s)), input_len=input_len,
        output_len=a.output_len, cores=a.peer_cores, tokenizer=a.tokenizer, out=out,
        peers_dir=a.peers_dir, streams=math.ceil(rate * warm) + 100,
    )  # fmt: skip
    rc, cpu, _ = run_tree(tool.argv(job), cores, out / "run.log", tool.env(job))
    log = stub_log(url)
    if rc or not log:
        return {"note": f"failed (exit {rc}, {len(log)} requests): see {out}/run.log"}
    t = np.array(sorted(x[0] for x in log))
    lo, hi = t[0] + warm, t[-1]
    row = window_row(log, cpu, lo, hi, t, rate)
    try:
        rep = tool.report(job)
    except (OSError, KeyError, ValueError, IndexError) as e:
        return {**row, "note": f"no report ({type(e).__name__}: {e}); see {out}/run.log"}
    stub = stub_lags(rep, log, t)
    note = f"{rep['completed']} completed" + (
        f", {rep['incomplete']} incomplete" if rep.get("incomplete") else ""
    )
    own = rep.get("own_pcts_s") or (math.nan, math.nan)
    own = pcts(rep["lags_s"]) if "lags_s" in rep else (own[0] * 1000, own[1] * 1000)
    return {**row, "own": own, "stub": stub, "errors": rep["errors"], "cores": cores, "note": note}


# ----------------------------------------------------------------------------- the table

COLS = [
    ("row", "{}"), ("tool", "{}"), ("workers", "{}"), ("cores", "{}"), ("target", "{:g}"),
    ("rate", "{:.1f}"), ("own_p50", "{:.2f}"), ("own_p99", "{:.2f}"), ("stub_p50", "{:.2f}"),
    ("stub_p99", "{:.2f}"), ("ks", "{:.3f}"), ("ks95", "{:.3f}"), ("cpu", "{:.2f}"),
    ("cpu_ms/req", "{:.2f}"), ("requests", "{}"), ("errors", "{}"), ("stub_cpu", "{:.2f}"),
    ("load1", "{:.2f}"),
    ("note", "{}"),
]  # fmt: skip


def cells(r: dict) -> list[str]:
    flat = {
        **r,
        "own_p50": r.get("own", (math.nan,) * 2)[0],
        "own_p99": r.get("own", (math.nan,) * 2)[1],
        "stub_p50": r.get("stub", (math.nan,) * 2)[0],
        "stub_p99": r.get("stub", (math.nan,) * 2)[1],
        "cpu": r.get("cpu_use", math.nan),
        "cpu_ms/req": r.get("cpu_ms_per_req", math.nan),
    }
    out = []
    for c, f in COLS:
        v = flat.get(c, "-")
        out.append("-" if v is None or v == "-" or (isinstance(v, float) and math.isnan(v))
                   else f.format(v))  # fmt: skip
    return out


def table(rows: list[dict]) -> str:
    grid = [[c for c, _ in COLS]] + [cells(r) for r in rows]
    w = [max(len(g[i]) for g in grid) for i in range(len(COLS))]
    last = len(w) - 1  # the note: left-aligned
    lines = ["  ".join(x.rjust(w[i]) if i < last else x for i, x in enumerate(g)) for g in grid]
    return "\n".join([lines[0], "  ".join("-" * x for x in w), *lines[1:]])


# ----------------------------------------------------------------------------- a row


def mean_prompt(a, shape: str, jps: float) -> int:
    wl = cl.workload(shape, 200, jps, a.turns, a.tool_ms / 1000)
    return round(np.mean([j.prompt_tokens(k) for j in wl.jobs for k in range(1, a.turns + 1)]))


def one_row(a, shape: str, tmp: Path, rows: list[dict]) -> None:
    conv_key, jps_key = ROWS[shape]
    n, jps = getattr(a, conv_key), getattr(a, jps_key)
    plan = cl.plan(a, n, jps)
    rate = jps * a.turns
    input_len = mean_prompt(a, shape, jps)
    warm = plan["delay_ms"] / 1000 + (a.output_len - 1) * a.itl_ms / 1000  # one request's life
    stub_core = stub_server.assign_cores(a.cores, 1)[1]
    stub_server.claim_core(stub_core, "normal")  # this process: only the sampler, beside the stub
    stub, url = stub_server.start_stub(plan["delay_ms"], a.itl_ms, core=stub_core, prio=a.priority)
    STUB[:] = [TreeCPU(stub.pid, every=0.5)]
    STUB[0].start()
    head = {"row": f"{shape} {n}", "target": rate}
    print(
        f"# {shape}: {n} conversations at {jps:g} jobs/s = {rate:g} requests/s, stub delay "
        f"{plan['delay_ms']:.0f} ms, peers: {input_len} tokens in, {a.output_len} out; stub on "
        f"core(s) {stub_core or '-'}; load average {cl.load()}",
        flush=True,
    )
    try:
        for name in a.tools:
            stub_log(url)  # empty it
            if name == "kvbench":
                for w in a.workers:
                    r = {**head, "tool": "kvbench", "workers": w}
                    r |= kvbench_row(a, url, shape, n, plan, w, tmp)
                    rows.append(r)
                    print(table(rows).splitlines()[-1], flush=True)
                continue
            tool = pt.TOOLS[name]
            r = {**head, "tool": name}
            why = tool.missing(a.peers_dir)
            if why:
                r["note"] = f"skipped: {why}"
            else:
                r |= peer_row(a, tool, url, rate, input_len, warm, tmp)
            rows.append(r)
            print(table(rows).splitlines()[-1], flush=True)
    finally:
        STUB[0].done.set()
        stub.terminate()
        stub.wait()


def goals(rows: list[dict]) -> list[str]:
    """Issue 15's figures, per kvbench row: p99 lag (own and at the stub) <= 5 ms, no errors,
    CPU per request at or below the best peer's of the same row."""
    out = []
    for r in (r for r in rows if r["tool"] == "kvbench" and "cpu_ms_per_req" in r):
        peers = [p for p in rows if p["row"] == r["row"] and p["tool"] != "kvbench"]
        best = min(
            (p for p in peers if "cpu_ms_per_req" in p and not p.get("errors")),
            key=lambda p: p["cpu_ms_per_req"],
            default=None,
        )
        ok = {
            "own p99 <= 5 ms": r["own"][1] <= GOAL_MS,
            "stub p99 <= 5 ms": r["stub"][1] <= GOAL_MS,
            "errors 0": r["errors"] == 0,
        }
        if best:
            ok[f"cpu <= {best['tool']}'s {best['cpu_ms_per_req']:.2f} ms"] = (
                r["cpu_ms_per_req"] <= best["cpu_ms_per_req"]
            )
        said = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in ok.items())
        out.append(f"{r['row']}, kvbench {r['workers']} worker(s): {said}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument(
        "--tools", nargs="+", choices=["kvbench", *pt.TOOLS], default=["kvbench", *pt.TOOLS]
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="kvbench rows")
    p.add_argument("--peer-cores", type=int, help="cores of each peer (default: most workers)")
    p.add_argument("--skip-missing", action="store_true", help="skip peers not installed")
    p.add_argument("--conv", type=int, default=2000, help="small row: conversations")
    p.add_argument("--jps", type=float, default=10.0, help="small row: jobs/s")
    p.add_argument("--seed-conv", type=int, default=500, help="seed row: conversations")
    p.add_argument("--seed-jps", type=float, default=15.0, help="seed row: jobs/s")
    p.add_argument("--measure-s", type=float, default=30.0, help="the measured window")
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--tool-ms", type=float, default=500.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--output-len", type=int, default=20)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--priority", choices=["normal", "nice", "fifo"], default="normal")
    p.add_argument("--peers-dir", type=Path, default=REPO / "bench" / ".peers")
    p.add_argument("--json", type=Path, help="also write the rows here")
    a = p.parse_args()
    a.mode, a.peer_cores = "steady", a.peer_cores or max(a.workers)
    a.cores = sorted(os.sched_getaffinity(0))
    missing = {t: pt.TOOLS[t].missing(a.peers_dir) for t in a.tools if t in pt.TOOLS}
    if not a.skip_missing and any(missing.values()):
        raise SystemExit("; ".join(f"{t}: {w}" for t, w in missing.items() if w)
                         + " (--skip-missing runs without them)")  # fmt: skip
    print(f"# {len(a.cores)} cores, load average {cl.load()}", flush=True)
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="kvb-peers-"))  # kept: the tools' logs and files
    if any(t in pt.TOOLS and not missing[t] for t in a.tools):  # the peers' datasets need it
        a.tokenizer = pt.make_tokenizer(tmp / "tokenizer")
    for shape in a.rows:
        one_row(a, shape, tmp, rows)
    print()
    print(table(rows))
    print("\n" + "\n".join(goals(rows)))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nload average now {cl.load()}; the tools' logs and files: {tmp}")


if __name__ == "__main__":
    main()
