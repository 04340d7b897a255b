"""Local execution: cells one after another, each a submitit local job, with progress."""

from __future__ import annotations

import json
import logging
import time

import submitit
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from launch import submit

log = logging.getLogger(__name__)


def _jobs_progress(cell_dir) -> tuple[int, int] | None:
    try:
        d = json.loads((cell_dir / "progress.json").read_text())
        return int(d["jobs_done"]), int(d["jobs_total"])
    except (OSError, ValueError, KeyError):
        return None


def run_serially(p, todo, console: Console) -> list:
    """Run ``todo`` cells of plan ``p`` one at a time; return the cells that failed."""
    failed = []
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, console=console, transient=False) as prog:
        cells_bar = prog.add_task("cells", total=len(todo))
        jobs_bar = prog.add_task("jobs of the current cell", total=None)
        for cell in todo:
            cfg, cell_dir = p.configs[cell], p.cell_dir(cell)
            prog.update(jobs_bar, description=f"jobs of {cell.rel_dir}", completed=0, total=None)
            ex = submit.local_executor(p.sweep.path, cfg)
            job = ex.submit(submit.CellJob(int(cfg.cluster.max_requeue)), OmegaConf.to_yaml(cfg), str(cell_dir))
            p.sweep.add_submission({"time": time.time(), "executor": "local", "jobs": [{"cell": cell.rel_dir, "job_id": job.job_id}]})
            try:
                while not job.done():
                    got = _jobs_progress(cell_dir)
                    if got:
                        prog.update(jobs_bar, completed=got[0], total=got[1])
                    time.sleep(1)
                job.result()
            except KeyboardInterrupt:
                job.cancel()  # SIGINT to the cell: it stops its server before exiting
                _wait_gone(job)
                raise
            except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
                failed.append(cell)
                console.print(f"[red]cell {cell.rel_dir} failed[/]: {_why(cell_dir, e)}", highlight=False)
            prog.advance(cells_bar)
    return failed


def _why(cell_dir, exc: Exception) -> str:
    try:
        err = json.loads((cell_dir / "manifest.json").read_text()).get("error")
    except (OSError, ValueError):
        err = None
    lines = (err or str(exc)).strip().splitlines() or ["?"]
    return "\n".join(lines[:1] + lines[-12:]) if len(lines) > 1 else lines[0]


def _wait_gone(job, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.5)
