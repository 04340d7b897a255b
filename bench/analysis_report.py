"""Benchmark of `python -m analysis report` on a synthetic sweep of 1,000,000 turn rows.

    python bench/analysis_report.py [--rows 1000000] [--jobs 2] [--keep DIR]

Builds the sweep (analysis.synth: 2 GPUs x 2 DRAM x 3 policies x 5 JPS, 8 turns a job), then
times the report in a fresh process, so that the peak memory is the report's alone. Prints the
wall time and the peak RSS of the report process and of its figure workers
(resource.getrusage). Goal (issue 4): under 30 s and under 4 GB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S, GOAL_GB = 30.0, 4.0
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(sweep: Path, out: Path, jobs: int) -> dict:
    """Runs in the fresh process: the report, timed, and this process's resource use."""
    import logging

    from analysis import pipeline, report

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    t0 = time.perf_counter()
    rep = report.build([sweep], out, pipeline.Options(), workers=jobs)
    wall = time.perf_counter() - t0
    self_ = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    turns = int(rep.results.cells["turn_rows"].sum())
    return {"wall_s": wall, "peak_rss_gb": self_.ru_maxrss / 2**20,
            "worker_peak_rss_gb": kids.ru_maxrss / 2**20,
            "cpu_s": self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime,
            "turn_rows": turns, "cells": len(rep.results.cells), "figures": len(rep.figures),
            "html_mb": rep.html.stat().st_size / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="turn rows in the sweep")
    ap.add_argument("--jobs", type=int, default=2, help="figure worker processes")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the sweep and report here")
    ap.add_argument("--measure", nargs=2, type=Path, metavar=("SWEEP", "OUT"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure[0], a.measure[1], a.jobs)))
        return 0
    if a.keep:
        return run(a.keep, a.rows, a.jobs)
    with tempfile.TemporaryDirectory(prefix="kvbench-bench-") as tmp:
        return run(Path(tmp), a.rows, a.jobs)


def run(root: Path, rows: int, jobs: int) -> int:
    sweep = root / f"20260101_bench{rows}"
    if not (sweep / "sweep.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "analysis.synth", str(root), "--turn-rows",
                        str(rows), "--name", f"bench{rows}"], check=True,
                       stdout=subprocess.DEVNULL, cwd=REPO)
        print(f"synthetic sweep: {sweep} ({time.perf_counter() - t0:.1f} s to build)")
    load_before = os.getloadavg()[0]
    r = subprocess.run([sys.executable, __file__, "--jobs", str(jobs), "--measure", str(sweep),
                        str(root / "report")], check=True, capture_output=True, text=True,
                       cwd=REPO)
    m = json.loads(r.stdout.strip().splitlines()[-1])
    phases = [ln for ln in r.stderr.splitlines() if "timings:" in ln]
    ok = m["wall_s"] < GOAL_S and max(m["peak_rss_gb"], m["worker_peak_rss_gb"]) < GOAL_GB
    print(f"report of {m['turn_rows']:,} turn rows, {m['cells']} cells, {m['figures']} figures "
          f"(report.html {m['html_mb']:.1f} MB)")
    print(f"wall time: {m['wall_s']:.1f} s   (CPU {m['cpu_s']:.1f} s, {jobs} figure workers)")
    if phases:
        print(f"phases:    {phases[-1].split('timings: ', 1)[1]}")
    print(f"peak RSS:  {m['peak_rss_gb']:.2f} GB report process, "
          f"{m['worker_peak_rss_gb']:.2f} GB largest worker")
    print(f"load avg:  {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on "
          "the 2 cores stretches the wall time, not the CPU time)")
    print(f"goal: < {GOAL_S:.0f} s and < {GOAL_GB:.0f} GB: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
