"""``status``: each cell of a sweep folder done / running / pending / failed / cancelled, with
totals.

The cell folder says what the harness knows (``DONE``, ``progress.json``, the manifest's
status); the scheduler says what it knows. On SLURM that is submitit's state (one ``sacct``
for all of the sweep's jobs) and, for the jobs still in the queue, ``squeue``'s state and
reason (``PENDING (Priority)``), which sacct does not give. Locally it is whether the cell's
submitit job (its controller's pid, on the host that recorded it) still runs. A cell whose
manifest still says ``running`` while its process is gone (killed outright: SIGKILL, the OOM
killer, a lost node) is ``failed``, with that reason: its job has ended, or, for a cell with no
job (``launch cell``), the pid its manifest records is no longer running on this host.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import records
from harness.cellkey import CellKey
from harness.lock import SWEEP_LOCK, read_holder
from launch import procs, sweepdir

# States of a job still queued or running (sacct's, and the others squeue shows while a job is
# in the queue: held, signalled, staging out).
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "SIGNALING", "STAGE_OUT", "STOPPED",
          "RESV_DEL_HOLD"}  # fmt: skip
STATES = ("done", "running", "pending", "failed", "cancelled")
CANCELS = "cancelled.json"  # <sweep>/_submitit/: what `launch cancel` stopped, and when


def last_submissions(sweep: sweepdir.SweepDir) -> dict[str, dict]:
    """cell rel_dir -> its latest submission: {executor, job_id, time, host}."""
    out = {}
    for sub in sweep.meta.get("submissions", []):
        for j in sub.get("jobs", []):
            out[sweepdir.rekey(j["cell"])] = {
                "executor": sub.get("executor", "slurm"),
                "job_id": str(j["job_id"]),
                "time": sub.get("time"),
                "host": sub.get("host"),
            }
    return out


def last_jobs(sweep: sweepdir.SweepDir) -> dict[str, tuple[str, str]]:
    """cell rel_dir -> (executor, job id) of its latest submission."""
    return {c: (s["executor"], s["job_id"]) for c, s in last_submissions(sweep).items()}


def is_active(sched: str | None) -> bool:
    return bool(sched and sched.split()[0] in ACTIVE)


# --- SLURM ------------------------------------------------------------------------------------

_COLLAPSED = re.compile(r"^(\d+)_\[([^\]]+)\]$")


def _expand(job_id: str) -> list[str]:
    """``12_[3-5,7%2]`` (an array's pending tasks, collapsed) -> 12_3, 12_4, 12_5, 12_7."""
    m = _COLLAPSED.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_squeue(text: str) -> dict[str, str]:
    """Lines of ``squeue -h -r -o "%i|%T|%r"`` -> job id -> "STATE (Reason)" ("STATE" when the
    reason is None, as for a running job)."""
    out = {}
    for line in text.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) != 3 or not parts[0] or not parts[1]:
            continue
        jid, state, reason = parts
        shown = f"{state} ({reason})" if reason and reason not in ("None", "(null)") else state
        for j in _expand(jid):
            out[j] = shown
    return out


def squeue_states(job_ids: Iterable[str]) -> dict[str, str]:
    """One ``squeue`` for these jobs: job id -> "STATE (Reason)" for those still in the queue
    (a finished job is not listed; when none is, squeue exits 1: "Invalid job id")."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    cmd = ["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_squeue(r.stdout) if r.returncode == 0 else {}


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """submitit's state of each job (one ``sacct`` for all of them, fresh on every call)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    import submitit

    watcher = submitit.SlurmJob.watcher  # shared by submitit's jobs; caches up to 600 s
    for jid in ids:
        watcher.register_job(jid)
    try:
        watcher.update()
    except Exception as e:  # noqa: BLE001 - sacct missing or failing: say so
        return {j: f"unknown ({type(e).__name__})" for j in ids}
    return {j: watcher.get_state(j, mode="cache") for j in ids}


def slurm_states(sweep: sweepdir.SweepDir) -> dict[str, str]:
    """cell rel_dir -> its SLURM job's state: squeue's "STATE (Reason)" while the job is in
    the queue, else submitit's (sacct's) state."""
    jobs = {c: jid for c, (ex, jid) in last_jobs(sweep).items() if ex == "slurm"}
    if not jobs:
        return {}
    by_job = sacct_states(jobs.values())
    # sacct lags behind the controller (and may not know a job submitted a moment ago); squeue
    # is the queue itself. Every job is asked: squeue lists only those still queued or running.
    by_job.update(squeue_states(jobs.values()))
    return {c: by_job.get(jid, "UNKNOWN") for c, jid in jobs.items()}


def active_cells(sweep: sweepdir.SweepDir) -> set[str]:
    return {c for c, s in slurm_states(sweep).items() if is_active(s)}


# --- local ------------------------------------------------------------------------------------


def local_states(sweep: sweepdir.SweepDir) -> dict[str, str]:
    """cell rel_dir -> "RUNNING (local pid N)" / "ENDED (local)" for cells whose latest
    submission is a local job recorded on this host; other hosts' jobs cannot be checked."""
    out = {}
    for c, s in last_submissions(sweep).items():
        if s["executor"] != "local" or (s["host"] is not None and s["host"] != procs.host()):
            continue
        alive = procs.controller_alive(s["job_id"], sweep.path, s["host"])
        out[c] = f"RUNNING (local pid {s['job_id']})" if alive else "ENDED (local)"
    return out


# --- cancellations ----------------------------------------------------------------------------


def cancels_file(sweep_path: Path) -> Path:
    return Path(sweep_path) / "_submitit" / CANCELS


def read_cancels(sweep_path: Path) -> list[dict]:
    try:
        d = json.loads(cancels_file(sweep_path).read_text())
    except (OSError, ValueError):
        return []
    return [x for x in d.get("cancels", []) if isinstance(x, dict)] if isinstance(d, dict) else []


def cancelled_cells(sweep: sweepdir.SweepDir) -> dict[str, float]:
    """cell -> when ``launch cancel`` stopped it, for cells whose latest submission is the one
    it cancelled (a later submission, a resume, supersedes the record)."""
    subs = last_submissions(sweep)
    out = {}
    for rec in read_cancels(sweep.path):
        for j in rec.get("jobs", []):
            s = subs.get(sweepdir.rekey(j.get("cell", "")))
            if s and s["job_id"] == str(j.get("job_id")) and (s["time"] or 0) <= rec["time"]:
                out[sweepdir.rekey(j["cell"])] = float(rec["time"])
    return out


# --- one cell ---------------------------------------------------------------------------------


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


ENDED = ("failed", "interrupted")  # manifest statuses of an attempt that ended without DONE
# Signals by which a person stopped a cell (launch cancel, scancel, Ctrl-C, a closed terminal).
USER_STOPS = ("SIGTERM", "SIGINT", "SIGHUP")


def process_gone(meta: dict) -> str | None:
    """Why the process a manifest records (``process``: pid, host, start time) is known to be
    gone: a sentence, or None if it runs, or cannot be checked (another host, no record)."""
    rec = meta.get("process") or {}
    try:
        pid = int(rec["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    if rec.get("host") != procs.host():
        return None
    if procs.pid_alive(pid, rec.get("started_unix")):
        return None
    return f"its process (pid {pid} on {rec.get('host')}) is gone"


def killed_detail(meta: dict, why: str | None = None) -> str:
    """The reason shown for a cell killed outright: its manifest still says running."""
    return (f"{why or 'its job ended'} while its manifest still says running: killed without a "
            "word (SIGKILL, the OOM killer, a lost node); it runs again on the next sweep")


def _user_stop(meta: dict) -> bool:
    """An interrupted attempt that a person stopped (not the scheduler's pre-emption)."""
    err = meta.get("error") or ""
    return meta.get("status") == "interrupted" and any(f"received {s}" in err.split("\n")[0]
                                                       for s in USER_STOPS)  # fmt: skip


def cell_state(
    cell_dir: Path, sched: str | None, cancelled: bool = False, submitted: float | None = None
) -> tuple[str, str]:
    """(state, detail) for one cell folder. ``sched``: its job's state (None: not known);
    ``cancelled``: ``launch cancel`` stopped its latest job; ``submitted``: when that job was
    submitted (a manifest older than it is an earlier submission's, not a requeued attempt)."""
    state, detail, _ = _cell_state(cell_dir, sched, cancelled, submitted)
    return state, detail


def _cell_state(
    cell_dir: Path, sched: str | None, cancelled: bool, submitted: float | None
) -> tuple[str, str, records.Progress | None]:
    """:func:`cell_state` and the cell's progress, read once (None when it does not run)."""
    if records.is_done(cell_dir):
        return "done", "", None
    man = cell_dir / records.MANIFEST
    try:
        meta = json.loads(man.read_text()) if man.exists() else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    # No job to ask (``launch cell``, another host's job): the process the manifest records.
    gone = process_gone(meta) if sched is None and meta.get("status") == "running" else None
    prog = records.read_progress(cell_dir)
    if prog and (sched is None or is_active(sched)) and gone is None:
        return "running", prog.describe(), prog
    active = is_active(sched)
    user_stop = _user_stop(meta)
    if not active and (cancelled or (sched or "").startswith("CANCELLED")
                       or user_stop and (sched or "ENDED").split()[0] in ("ENDED", "COMPLETED")):
        err = (meta.get("error") or "").splitlines()[:1]
        return "cancelled", "; ".join(["no job left", *(e[:200] for e in err)]), None
    failed_sched = (
        sched is not None and not active and sched.split()[0] not in {"COMPLETED", "UNKNOWN"}
    )
    # A failed attempt whose job is still queued or running (requeued after a pre-emption or a
    # time-out signal) is not a failed cell: it gets another attempt.
    if meta.get("status") in ENDED and not active or failed_sched or gone:
        tail = _tail(cell_dir / "client.log") or _tail(cell_dir / "server.log")
        error = meta.get("error", "")[:300]
        if meta.get("status") == "running" or (not meta and failed_sched):
            error = killed_detail(meta, gone) if meta else "its job ended before the cell began"
        return "failed", "\n".join(x for x in (error, tail) if x), None
    if active:
        assert sched is not None  # active implies it
        ended = meta.get("status") in ENDED
        retry = (meta.get("error") or "").splitlines()[:1] if ended else []
        started = (meta.get("times") or {}).get("start_unix")
        earlier = submitted is not None and started is not None and started < submitted
        how = "earlier attempt" if earlier else "requeued after"
        detail = f"{how}: {retry[0][:120]}" if retry else ""
        state = "running" if sched.startswith("RUNNING") else "pending"
        return state, detail, prog if state == "running" else None
    return "pending", "", None


# --- the sweep --------------------------------------------------------------------------------


def collect(path: Path) -> tuple[sweepdir.SweepDir, list[dict]]:
    """Rows of the status table: cell, state, scheduler, detail, and job_id, executor,
    jobs_done, jobs_total (progress of a running cell; None otherwise)."""
    sweep = sweepdir.load(path)
    sched = {**local_states(sweep), **slurm_states(sweep)}
    subs = last_submissions(sweep)
    cancelled = cancelled_cells(sweep)
    rows = []
    for rel in map(sweepdir.rekey, sweep.meta.get("matrix", [])):
        d = sweep.cell_dir(CellKey.from_rel(rel))
        sub = subs.get(rel, {})
        state, detail, prog = _cell_state(d, sched.get(rel), rel in cancelled, sub.get("time"))
        rows.append({
            "cell": rel, "state": state, "scheduler": sched.get(rel, ""), "detail": detail,
            "job_id": sub.get("job_id", ""), "executor": sub.get("executor", ""),
            "jobs_done": prog.jobs_done if prog else None,
            "jobs_total": prog.jobs_total if prog else None,
        })  # fmt: skip
    _queued_behind(rows, sweep)
    return sweep, rows


def _queued_behind(rows: list[dict], sweep: sweepdir.SweepDir) -> None:
    """A cell whose server job runs, but which waits for an earlier cell of that job (the JPS
    levels of a shared server run one after another, lowest first), is pending, not running."""
    by_job: dict[str, list[dict]] = {}
    for r in rows:
        if r["job_id"]:
            by_job.setdefault(r["job_id"], []).append(r)
    for group in by_job.values():
        group.sort(key=lambda r: CellKey.from_rel(r["cell"]).jps)
        for i, r in enumerate(group):
            if r["state"] != "running" or r["jobs_total"] is not None:
                continue
            if r["detail"] or _started(sweep, r["cell"]):
                continue
            ahead = next((x for x in group[:i] if x["state"] in ("running", "pending")), None)
            if ahead is not None:
                r["state"], r["detail"] = "pending", f"after {ahead['cell']} on its server"


def _started(sweep: sweepdir.SweepDir, rel: str) -> bool:
    """The cell has begun measuring (its manifest has a workload): not merely queued in its
    server's job."""
    try:
        meta = json.loads((sweep.cell_dir(CellKey.from_rel(rel)) / records.MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("workload")) and meta.get("status") == "running"


def totals(rows: list[dict]) -> dict[str, int]:
    """Cells per state, and jobs done / total over the running cells."""
    counts = Counter(r["state"] for r in rows)
    out = {k: counts.get(k, 0) for k in STATES}
    out["cells"] = len(rows)
    out["jobs_done"] = sum(r.get("jobs_done") or 0 for r in rows if r["state"] == "running")
    out["jobs_total"] = sum(r.get("jobs_total") or 0 for r in rows if r["state"] == "running")
    return out


def totals_line(t: dict[str, int]) -> str:
    cells = ", ".join(f"{k} {t[k]}" for k in STATES)
    line = f"{t['cells']} cells: {cells}"
    if t["running"]:
        line += f"; jobs {t['jobs_done']}/{t['jobs_total']} in running cells"
    return line


def show(path: Path, console: Console) -> int:
    sweep, rows = collect(path)
    t = Table(title=f"{sweep.path}")
    for col in ("cell", "state", "scheduler", "detail"):
        t.add_column(col, overflow="fold")
    for r in rows:
        style = {"done": "green", "failed": "red", "running": "yellow", "cancelled": "magenta"}
        s = style.get(r["state"], "")
        state = f"[{s}]{r['state']}[/]" if s else r["state"]
        t.add_row(r["cell"], state, escape(r["scheduler"]), escape(r["detail"]))
    console.print(t)
    launcher = procs.read_launcher(sweep.path)
    if launcher is not None and launcher.alive():
        console.print(f"local launcher: pid {launcher.pid} on {launcher.host}; stop it with "
                      f"python -m launch cancel {sweep.path}", highlight=False)  # fmt: skip
    holder = read_holder(sweep.path / SWEEP_LOCK)
    if (holder is not None and (launcher is None or holder.pid != launcher.pid)
            and (holder.host != procs.host() or procs.pid_alive(holder.pid, holder.started_unix))):
        console.print(f"sweep folder in use by {holder.describe()}", highlight=False,
                      soft_wrap=True, markup=False)  # fmt: skip
    console.print(totals_line(totals(rows)), highlight=False, soft_wrap=True)
    return 0


def record_cancel(sweep_path: Path, when: float, executor: str, jobs: list[dict[str, Any]]) -> None:
    """Append what ``launch cancel`` stopped ([{cell, job_id}]) to the sweep's record."""
    f = cancels_file(sweep_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    recs = read_cancels(sweep_path)
    recs.append({"time": when, "executor": executor, "jobs": jobs})
    records.write_json({"cancels": recs}, f)
