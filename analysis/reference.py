"""The seed's quoted numbers (analysis/reference.csv) and how a sweep compares with them.

Each row of reference.csv is one statement of research-update-2026-04-14, with its section
and the sentence it comes from. Blank gpu/dram/policy/jps means the statement does not name
one (any); `h200;h100` lists GPUs; jps_lo..jps_hi is a range (blank end: open); value_lo..
value_hi is the stated value or range (blank end: a bound); approx marks "~".
Metrics: mean_jct_s, pct_vs (mean JCT against `comparator`, percent), pct_win (margin of the
winner, comparator unstated), winner, jct_ratio_vs, turn_latency_s (turns turn_lo..turn_hi),
turn_latency_peak_s (turn not stated), tlast_over_t1.

The seed ran every policy in the engine's default scheduling order, so its statements speak
about cells with ``sched`` = SEED_SCHED only, and its winner statements about the winner
among those cells (the pipeline passes winners computed over them).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from analysis.load import KEYS
from analysis.stats import DEFAULT_SCHED, group_label
from analysis.validity import cell_label

log = logging.getLogger(__name__)

SEED_SCHED = DEFAULT_SCHED  # the scheduling order the seed's numbers were measured in
REFERENCE_CSV = Path(__file__).with_name("reference.csv")
DEFAULT_TOLERANCE = 0.25  # a stated value widened by this fraction still "agrees"
_NUM = ["dram", "jps_lo", "jps_hi", "turn_lo", "turn_hi", "value_lo", "value_hi"]


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    ref = pd.read_csv(path or REFERENCE_CSV, dtype=str, keep_default_na=False)
    for c in _NUM:
        ref[c] = pd.to_numeric(ref[c].replace("", None), errors="raise")
    ref["approx"] = ref["approx"].str.lower().eq("true")
    ref["gpus"] = ref["gpu"].map(lambda s: frozenset(g.strip().lower() for g in s.split(";")
                                                     if g.strip()))
    return ref


def matches(r: dict | pd.Series, gpu: str, dram: int, policy: str | None, jps: float) -> bool:
    """Does reference row r speak about this cell (policy None: any policy, for groups)?"""
    if r["gpus"] and gpu.lower() not in r["gpus"]:
        return False
    if not math.isnan(r["dram"]) and int(r["dram"]) != int(dram):
        return False
    if policy is not None and r["policy"] and r["policy"] != policy:
        return False
    lo, hi = r["jps_lo"], r["jps_hi"]
    return (math.isnan(lo) or jps >= lo - 1e-9) and (math.isnan(hi) or jps <= hi + 1e-9)


def seed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells the seed's statements can speak about: those in the seed's order."""
    if "sched" not in cells:
        return cells
    return cells[cells["sched"] == SEED_SCHED]


def seed_policies(cells: pd.DataFrame) -> set[str]:
    """Policies of the cells in the seed's order (the figures draw the seed's values for
    those, in the policy's colour)."""
    return set(seed_cells(cells)["policy"])


def seed_text(r: dict | pd.Series) -> str:
    if r["metric"] == "winner":
        return r["value_text"]
    lo, hi, u = r["value_lo"], r["value_hi"], r["unit"]
    u = {"x": "×", "%": "%"}.get(u, f" {u}")
    tilde = "~" if r["approx"] else ""
    if math.isnan(lo):
        return f"< {hi:g}{u}"
    if math.isnan(hi):
        return f"> {lo:g}{u}"
    if lo == hi:
        return f"{tilde}{lo:g}{u}"
    return f"{tilde}{lo:g}–{hi:g}{u}"


def agrees(r: dict | pd.Series, lo_ours: float, hi_ours: float, tol: float) -> bool | None:
    """Do our values (a point, or a min..max over turns) sit in the stated range, each stated
    end widened by tol of its size (twice tol for an approximate statement)?"""
    if math.isnan(lo_ours) or math.isnan(hi_ours):
        return None
    t = tol * (2 if r["approx"] else 1)
    lo, hi = r["value_lo"], r["value_hi"]
    ok_lo = math.isnan(lo) or lo_ours >= lo - t * abs(lo)
    ok_hi = math.isnan(hi) or hi_ours <= hi + t * abs(hi)
    return bool(ok_lo and ok_hi)


def _mid(r: dict) -> float:
    vals = [v for v in (r["value_lo"], r["value_hi"]) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _ours(r: dict, cell: dict, t: dict[str, pd.DataFrame]) -> tuple[str, float, float]:
    """Our value for reference row r at one cell: (text, low, high)."""
    key = tuple(cell[k] for k in KEYS)
    m = r["metric"]
    if m == "mean_jct_s":
        v = t["jct"].get(key, math.nan)
        return f"{v:.3g} s", v, v
    if m in ("pct_vs", "jct_ratio_vs"):
        ref_key = tuple(r["comparator"] if n == "policy" else v
                        for n, v in zip(KEYS, key, strict=True))
        a, b = t["jct"].get(key, math.nan), t["jct"].get(ref_key, math.nan)
        v = (a / b - 1) * 100 if m == "pct_vs" else a / b
        if math.isnan(v):
            return f"n/a ({r['comparator']} cell not valid)", v, v
        return (f"{v:+.1f}%" if m == "pct_vs" else f"{v:.2f}×"), v, v
    if m == "tlast_over_t1":
        v = t["ratio"].get(key, math.nan)
        return f"{v:.2f}×", v, v
    pt = t["turns"].get(key)
    if pt is None:
        return "n/a", math.nan, math.nan
    if m == "turn_latency_peak_s":
        v = float(pt.max())
        return f"peak {v:.3g} s (T{int(pt.idxmax())})", v, v
    sel = pt.loc[int(r["turn_lo"]):int(r["turn_hi"])]
    if sel.empty:
        return "n/a", math.nan, math.nan
    lo, hi = float(sel.min()), float(sel.max())
    span = f"T{int(r['turn_lo'])}" + (f"–T{int(r['turn_hi'])}" if r["turn_hi"] != r["turn_lo"]
                                      else "")
    return (f"{span}: {lo:.3g}–{hi:.3g} s" if lo != hi else f"{span}: {lo:.3g} s"), lo, hi


def _lookups(jct: pd.DataFrame, pt: pd.DataFrame, ratio: pd.DataFrame) -> dict:
    keys = KEYS
    return {
        "jct": jct.set_index(keys)["mean_jct_s"].to_dict(),
        "ratio": ratio.set_index(keys)["tlast_over_t1"].to_dict(),
        "turns": {k: g.set_index("turn")["mean_latency_s"].sort_index()
                  for k, g in pt.groupby(keys)},
    }


def _group_row(r: dict, w: dict, tol: float) -> dict:
    where = group_label(w)
    if r["metric"] == "winner":
        ours = w["winner"] if w["winner"] else "none valid"
        if w["tie"]:
            ours = f"tie ({w['verdict']})"
        ok = None if not w["winner"] else bool(w["winner"] == r["value_text"] and not w["tie"])
        return {"cell": where, "sweep": w["sweep"], "ours": ours, "ours_value": math.nan,
                "agrees": ok}
    if w["winner"] != r["policy"]:
        return {"cell": where, "sweep": w["sweep"], "ours": f"winner is {w['winner']}",
                "ours_value": math.nan, "agrees": False if w["winner"] else None}
    v = w["pct_vs_runner_up"]
    return {"cell": where, "sweep": w["sweep"], "ours": f"{v:+.1f}% vs {w['runner_up']}",
            "ours_value": v, "agrees": agrees(r, v, v, tol)}


def check(ref: pd.DataFrame, cells: pd.DataFrame, jct: pd.DataFrame, pt: pd.DataFrame,
          ratio: pd.DataFrame, winners: pd.DataFrame, tol: float = DEFAULT_TOLERANCE
          ) -> pd.DataFrame:
    """One row per (reference statement, cell or group of ours that it speaks about): cells
    in the seed's order (seed_cells); `winners` should be those among such cells."""
    t = _lookups(jct, pt, ratio)
    cell_rows = seed_cells(cells).to_dict("records")
    win_rows = winners.to_dict("records")
    rows = []
    for r in ref.to_dict("records"):
        base = {"id": r["id"], "section": r["section"], "metric": r["metric"],
                "seed": seed_text(r), "quote": r["quote"], "note": r["note"]}
        if r["metric"] in ("winner", "pct_win"):
            for w in win_rows:
                if matches(r, w["gpu"], w["dram"], None, w["jps"]):
                    rows.append({**base, **_group_row(r, w, tol)})
            continue
        for c in cell_rows:
            if not matches(r, c["gpu"], c["dram"], c["policy"], c["jps"]):
                continue
            row = {**base, "cell": cell_label(c), "sweep": c["sweep"]}
            if not c["valid"]:
                rows.append({**row, "ours": c["state"], "ours_value": math.nan, "agrees": None})
                continue
            text, lo, hi = _ours(r, c, t)
            rows.append({**row, "ours": text, "ours_value": hi,
                         "ratio": hi / _mid(r) if lo == hi and _mid(r) else math.nan,
                         "agrees": agrees(r, lo, hi, tol)})
    cols = ["id", "section", "sweep", "cell", "metric", "seed", "ours", "ours_value", "ratio",
            "agrees", "quote", "note"]
    return pd.DataFrame(rows, columns=cols)
