"""Small frames with known answers, keyed like the loaded records.

A cell is (gpu, dram, policy, jps), in the engine's default scheduling order, or
(gpu, dram, policy, sched, jps)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.load import KEYS
from analysis.stats import DEFAULT_SCHED


def key(cell: tuple) -> dict:
    """The axis columns of a cell tuple (4 items: the default order; 5: with sched)."""
    if len(cell) == 4:
        g, d, p, j = cell
        o = DEFAULT_SCHED
    else:
        g, d, p, o, j = cell
    return {"gpu": g, "dram": d, "policy": p, "sched": o, "jps": float(j)}


def full(cell: tuple, sweep: str = "s") -> tuple:
    """The KEYS tuple of a cell tuple (what samples and lookups are keyed by)."""
    return (sweep, *key(cell).values())


def jobs(cells: dict[tuple, Sequence[float]], sweep: str = "s", arrivals: dict | None = None
         ) -> pd.DataFrame:
    """One row per job; cells maps a cell tuple to the JCTs in job-id order."""
    rows = []
    for cell, jcts in cells.items():
        arr = (arrivals or {}).get(cell, np.arange(len(jcts), dtype=float))
        for i, (x, a) in enumerate(zip(jcts, arr, strict=True)):
            rows.append({"sweep": sweep, **key(cell), "job_id": i, "arrival_s": float(a),
                         "start_s": float(a), "end_s": float(a) + x, "jct_s": x,
                         "status": "ok"})
    return pd.DataFrame(rows)


def cells(keys: Sequence[tuple], sweep: str = "s", **states: str) -> pd.DataFrame:
    """A validity-assessed cells frame: every cell ok unless states names it (by policy, or
    by policy__sched for one order)."""
    rows = []
    for cell in keys:
        k = key(cell)
        st = states.get(f"{k['policy']}__{k['sched']}", states.get(k["policy"], "ok"))
        rows.append({"sweep": sweep, **k, "state": st, "valid": st in ("ok", "unfinished"),
                     "seed": 42.0, "jobs_expected": 10, "folder": True})
    return pd.DataFrame(rows)


def per_turn(means: dict[tuple, Sequence[float]], sweep: str = "s") -> pd.DataFrame:
    rows = [{"sweep": sweep, **key(cell), "turn": t + 1, "mean_latency_s": m}
            for cell, ms in means.items() for t, m in enumerate(ms)]
    return pd.DataFrame(rows)


def keys_of(df: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in df[KEYS].itertuples(index=False)]
