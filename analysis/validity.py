"""Per-cell validity: may a cell's numbers be drawn, and if not, why.

States, in the order they are checked (the first that applies wins):

- ``missing``: the sweep's matrix names the cell but it has no folder.
- ``failed``: the cell manifest says ``status: failed`` or ``interrupted`` (a signal stopped
  it: a cancel, Ctrl-C, a pre-emption; it runs again on the next sweep).
- ``lag``: the client's lag flag is set (its arrivals were late: the load was not the JPS).
- ``running``: a folder without DONE and without data yet.
- ``no_data``: DONE is there but turns/jobs are not.
- ``jobs_failed`` / ``incomplete``: fewer jobs ended ok than the cell started (``incomplete``
  when DONE is missing); a mean over the survivors would flatter the policy.
- ``unfinished``: no DONE, but all the data needed is there: drawn, flagged (hollow marker).
- ``ok``.

Only ``ok`` and ``unfinished`` cells are *valid*: every other cell is shown by its state,
never as a number.
"""

from __future__ import annotations

import pandas as pd

from analysis.load import KEYS, cell_of

VALID_STATES = ("ok", "unfinished")
STATE_TEXT = {
    "ok": "ok",
    "unfinished": "no DONE marker (running or interrupted); numbers provisional",
    "missing": "in the sweep matrix, no cell folder",
    "failed": "manifest status: failed or interrupted",
    "lag": "client lag flag set: arrivals were late",
    "running": "no data yet (no DONE)",
    "no_data": "DONE but no turns/jobs parquet",
    "jobs_failed": "jobs did not all finish ok",
    "incomplete": "jobs did not all finish ok and no DONE",
}


def _truthy(s: pd.Series) -> pd.Series:
    return s.map(lambda v: v is True or v == 1 or (isinstance(v, str) and v.lower() == "true"))


def _job_counts(jobs: pd.DataFrame) -> pd.DataFrame:
    g = jobs.assign(
        started=jobs["start_s"].notna() if "start_s" in jobs else True,
        ok=jobs["status"] == "ok",
    ).groupby(KEYS)
    return pd.DataFrame({"jobs_rows": g.size(), "jobs_started": g["started"].sum(),
                         "jobs_ok": g["ok"].sum()})


def _turn_counts(turns: pd.DataFrame) -> pd.DataFrame:
    st = turns["status"]
    g = turns.assign(err=st.isin(["error", "timeout"]), not_sent=st == "not_sent").groupby(KEYS)
    return pd.DataFrame({"turn_rows": g.size(), "turn_errors": g["err"].sum(),
                         "turns_not_sent": g["not_sent"].sum(),
                         "retries": g["retries"].sum(min_count=1)})


def _state(r: pd.Series, max_failed_frac: float) -> str:
    if not r["folder"]:
        return "missing"
    if r["manifest_status"] in ("failed", "interrupted"):
        return "failed"
    if r["lag_flag"]:
        return "lag"
    if not (r["has_turns"] and r["has_jobs"]) or r["jobs_rows"] == 0:
        return "no_data" if r["done"] else "running"
    if r["jobs_ok"] < r["jobs_expected"] * (1.0 - max_failed_frac) - 1e-9:
        return "jobs_failed" if r["done"] else "incomplete"
    return "ok" if r["done"] else "unfinished"


def assess(cells: pd.DataFrame, jobs: pd.DataFrame, turns: pd.DataFrame,
           max_failed_frac: float = 0.0) -> pd.DataFrame:
    """cells plus job/turn counts, `state`, `valid` and a human `note`."""
    out = cells.merge(_job_counts(jobs), on=KEYS, how="left")
    out = out.merge(_turn_counts(turns), on=KEYS, how="left")
    for c in ("folder", "has_turns", "has_jobs", "has_metrics", "done", "lag_flag"):
        out[c] = _truthy(out[c]) if c in out else False
    for c in ("jobs_rows", "jobs_started", "jobs_ok", "turn_rows", "turn_errors",
              "turns_not_sent"):
        out[c] = out[c].fillna(0).astype("int64")
    out["jobs_expected"] = out["n_jobs_spec"].fillna(out["jobs_rows"]).astype("int64")
    out["state"] = out.apply(_state, axis=1, max_failed_frac=max_failed_frac)
    out["valid"] = out["state"].isin(VALID_STATES)
    out["note"] = out.apply(_note, axis=1)
    return out


def _note(r: pd.Series) -> str:
    parts = [STATE_TEXT[r["state"]]]
    if r["state"] == "failed" and isinstance(r.get("failure"), str) and r["failure"]:
        parts.append(r["failure"][:200])
    if r["folder"] and r["jobs_rows"]:
        parts.append(f"{r['jobs_ok']}/{r['jobs_started']} jobs ok (spec {r['jobs_expected']})")
    if r.get("turn_errors"):
        parts.append(f"{r['turn_errors']} error turn rows")
    if not r.get("has_manifest", True) and r["folder"]:
        parts.append("no manifest.json")
    if r["folder"] and not r["has_metrics"] and r["state"] in VALID_STATES:
        parts.append("no metrics.parquet")
    return "; ".join(parts)


def cell_label(r: pd.Series | dict) -> str:
    """The cell as its key names it, e.g. gpu=h100/dram=64/policy=fcfs/sched=fcfs/jps=3
    (also for a folder written before an axis existed)."""
    return cell_of(r).rel_dir
