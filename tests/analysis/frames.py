"""Small frames with known answers, keyed like the loaded records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.load import KEYS


def jobs(cells: dict[tuple, Sequence[float]], sweep: str = "s", arrivals: dict | None = None
         ) -> pd.DataFrame:
    """One row per job; cells maps (gpu, dram, policy, jps) to the JCTs in job-id order."""
    rows = []
    for (g, d, p, j), jcts in cells.items():
        arr = (arrivals or {}).get((g, d, p, j), np.arange(len(jcts), dtype=float))
        for i, (x, a) in enumerate(zip(jcts, arr, strict=True)):
            rows.append({"sweep": sweep, "gpu": g, "dram": d, "policy": p, "jps": float(j),
                         "job_id": i, "arrival_s": float(a), "start_s": float(a),
                         "end_s": float(a) + x, "jct_s": x, "status": "ok"})
    return pd.DataFrame(rows)


def cells(keys: Sequence[tuple], sweep: str = "s", **states: str) -> pd.DataFrame:
    """A validity-assessed cells frame: every cell ok unless states names it (by policy)."""
    rows = []
    for g, d, p, j in keys:
        st = states.get(p, "ok")
        rows.append({"sweep": sweep, "gpu": g, "dram": d, "policy": p, "jps": float(j),
                     "state": st, "valid": st in ("ok", "unfinished"), "seed": 42.0,
                     "jobs_expected": 10, "folder": True})
    return pd.DataFrame(rows)


def per_turn(means: dict[tuple, Sequence[float]], sweep: str = "s") -> pd.DataFrame:
    rows = [{"sweep": sweep, "gpu": g, "dram": d, "policy": p, "jps": float(j), "turn": t + 1,
             "mean_latency_s": m}
            for (g, d, p, j), ms in means.items() for t, m in enumerate(ms)]
    return pd.DataFrame(rows)


def keys_of(df: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in df[KEYS].itertuples(index=False)]
