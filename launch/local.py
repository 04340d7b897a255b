"""Local execution: cells one after another, each a submitit local job, with progress."""

from __future__ import annotations

import json
import logging
import time

import submitit
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import records
from launch import submit

log = logging.getLogger(__name__)


def _jobs_progress(cell_dir) -> tuple[int, int] | None:
    try:
        d = json.loads((cell_dir / records.PROGRESS).read_text())
        return int(d["jobs_done"]), int(d["jobs_total"])
    except (OSError, ValueError, KeyError):
        return None


def run_serially(p, todo, console: Console) -> list:
    """Run ``todo`` cells of plan ``p`` one at a time; return the cells that failed."""
    failed = []
    cols = [
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ]
    with Progress(*cols, console=console, transient=False) as prog:
        cells_bar = prog.add_task("cells", total=len(todo))
        jobs_bar = prog.add_task("jobs of the current cell", total=None)
        for group in submit.server_groups([(c, p.configs[c], p.cell_dir(c)) for c in todo]):
            cfg = group[0][1]
            ex = submit.local_executor(p.sweep.path, cfg)
            job = ex.submit(submit.CellJob(int(cfg.cluster.max_requeue)), *submit.job_args(group))
            p.sweep.add_submission({"time": time.time(), "executor": "local",
                                    "jobs": [{"cell": c.rel_dir, "job_id": job.job_id}
                                             for c, _, _ in group]})  # fmt: skip
            try:
                _follow(job, group, prog, cells_bar, jobs_bar)
                job.result()
            except KeyboardInterrupt:
                job.cancel()  # SIGINT to the cell: it stops its server before exiting
                _wait_gone(job)
                raise
            except (
                submitit.core.utils.FailedJobError,
                submitit.core.utils.UncompletedJobError,
            ) as e:
                bad = [c for c, _, d in group if not records.is_done(d)]
                failed += bad
                why = _why(next((d for c, _, d in group if c in bad), group[0][2]), e)
                console.print(f"[red]{len(bad)} cell(s) failed[/] "
                              f"({', '.join(c.rel_dir for c in bad)}): {why}",
                              highlight=False)  # fmt: skip
            prog.update(
                cells_bar,
                completed=sum(records.is_done(d) or c in failed for c, _, d in _all(p, todo)),
            )
    return failed


def _why(cell_dir, exc: Exception) -> str:
    try:
        err = json.loads((cell_dir / records.MANIFEST).read_text()).get("error")
    except (OSError, ValueError):
        err = None
    lines = (err or str(exc)).strip().splitlines() or ["?"]
    return "\n".join(lines[:1] + lines[-12:]) if len(lines) > 1 else lines[0]


def _all(p, todo):
    return [(c, p.configs[c], p.cell_dir(c)) for c in todo]


def _follow(job, group, prog, cells_bar, jobs_bar) -> None:
    """Update the bars from the running cell's progress.json until the job ends."""
    done_before = int(prog.tasks[cells_bar].completed)
    while not job.done():
        finished = 0
        for cell, _, d in group:
            if records.is_done(d):
                finished += 1
                continue
            got = _jobs_progress(d)
            if got:
                prog.update(
                    jobs_bar, description=f"jobs of {cell.rel_dir}", completed=got[0], total=got[1]
                )
            break
        prog.update(cells_bar, completed=done_before + finished)
        time.sleep(1)


def _wait_gone(job, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
