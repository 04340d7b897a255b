"""``status``: each cell of a sweep folder done / running / pending / failed, with totals.

The cell folder says what the harness knows (``DONE``, ``progress.json``, the manifest's
status); the scheduler (through submitit, which asks ``sacct``) says what SLURM knows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness import records
from harness.cellkey import CellKey
from launch import sweepdir

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


def last_jobs(sweep: sweepdir.SweepDir) -> dict[str, tuple[str, str]]:
    """cell rel_dir -> (executor, job id) of its latest submission."""
    out = {}
    for sub in sweep.meta.get("submissions", []):
        for j in sub.get("jobs", []):
            out[sweepdir.rekey(j["cell"])] = (sub.get("executor", "slurm"), str(j["job_id"]))
    return out


def slurm_states(sweep: sweepdir.SweepDir) -> dict[str, str]:
    jobs = {c: jid for c, (ex, jid) in last_jobs(sweep).items() if ex == "slurm"}
    if not jobs:
        return {}
    import submitit

    folder = sweep.path / "_submitit"
    handles: dict[str, submitit.SlurmJob[Any]] = {
        c: submitit.SlurmJob(folder=folder, job_id=jid) for c, jid in jobs.items()
    }
    out = {}
    for c, h in handles.items():
        try:
            out[c] = h.state
        except Exception as e:  # noqa: BLE001 - sacct missing or failing: say so
            out[c] = f"unknown ({type(e).__name__})"
    return out


def active_cells(sweep: sweepdir.SweepDir) -> set[str]:
    return {c for c, s in slurm_states(sweep).items() if s.split()[0] in ACTIVE}


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def cell_state(cell_dir: Path, sched: str | None) -> tuple[str, str]:
    """(state, detail) for one cell folder."""
    if records.is_done(cell_dir):
        return "done", ""
    prog = cell_dir / records.PROGRESS
    if prog.exists() and (sched is None or sched.split()[0] in ACTIVE):
        d = json.loads(prog.read_text())
        return "running", f"jobs {d.get('jobs_done')}/{d.get('jobs_total')}"
    man = cell_dir / records.MANIFEST
    meta = json.loads(man.read_text()) if man.exists() else {}
    active = sched is not None and sched.split()[0] in ACTIVE
    failed_sched = (
        sched is not None and not active and sched.split()[0] not in {"COMPLETED", "UNKNOWN"}
    )
    # A failed attempt whose job is still queued or running (requeued after a pre-emption or a
    # time-out signal) is not a failed cell: it gets another attempt.
    if meta.get("status") == "failed" and not active or failed_sched:
        tail = _tail(cell_dir / "client.log") or _tail(cell_dir / "server.log")
        return "failed", "\n".join(x for x in (meta.get("error", "")[:300], tail) if x)
    if active:
        assert sched is not None  # active implies it
        retry = (meta.get("error") or "").splitlines()[:1] if meta.get("status") == "failed" else []
        detail = f"requeued after: {retry[0][:120]}" if retry else ""
        return ("running" if sched.startswith("RUNNING") else "pending"), detail
    return "pending", ""


def collect(path: Path) -> tuple[sweepdir.SweepDir, list[dict]]:
    sweep = sweepdir.load(path)
    sched = slurm_states(sweep)
    rows = []
    for rel in map(sweepdir.rekey, sweep.meta.get("matrix", [])):
        state, detail = cell_state(sweep.cell_dir(CellKey.from_rel(rel)), sched.get(rel))
        rows.append(
            {"cell": rel, "state": state, "scheduler": sched.get(rel, ""), "detail": detail}
        )
    return sweep, rows


def show(path: Path, console: Console) -> int:
    sweep, rows = collect(path)
    t = Table(title=f"{sweep.path}")
    for col in ("cell", "state", "scheduler", "detail"):
        t.add_column(col, overflow="fold")
    for r in rows:
        style = {"done": "green", "failed": "red", "running": "yellow"}.get(r["state"], "")
        state = f"[{style}]{r['state']}[/]" if style else r["state"]
        t.add_row(r["cell"], state, r["scheduler"], r["detail"])
    console.print(t)
    counts = Counter(r["state"] for r in rows)
    total = ", ".join(f"{k} {counts.get(k, 0)}" for k in ("done", "running", "pending", "failed"))
    console.print(f"{len(rows)} cells: {total}")
    return 0
