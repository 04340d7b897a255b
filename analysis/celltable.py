"""One row per cell, the figures a validation page prints (``python -m analysis cells``).

JCT mean/p50/p90, mean latency of each turn, last/first turn, the share of prompt tokens served
from cache, preemptions, the KV bytes each way, the client's arrival lag p99 and the cell's
state: every figure from :func:`analysis.pipeline.compute`, the report's own numbers, so a page
built from this table and the report agree. Cells that did not run (failed, cut, missing) stay
in the table with their state and no figures: a careful record keeps them.

The markdown writer is a few lines here rather than pandas' ``to_markdown``, which needs the
``tabulate`` package for one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from analysis.load import KEYS
from analysis.page import isnan
from analysis.pipeline import Results

DASH = "–"


def frame(res: Results) -> pd.DataFrame:
    """The table, numbers unrounded: a row per cell of ``res.cells``."""
    jct = res.jct.set_index(KEYS)
    why = res.why.set_index(KEYS)
    ratio = res.ratio.set_index(KEYS)["tlast_over_t1"]
    turns = {k: g.set_index("turn")["mean_latency_s"]
             for k, g in res.per_turn.groupby(KEYS, sort=False)}  # fmt: skip
    rows = []
    for c in res.cells.itertuples(index=False):
        k = tuple(getattr(c, n) for n in KEYS)
        row: dict = dict(zip(KEYS, k, strict=True))
        row["state"] = "ok" if c.valid else f"{c.state}: {_first(c.failure or c.note)}"
        if c.valid and k in jct.index:
            j, w = jct.loc[k], why.loc[k]
            row.update(mean_jct_s=j.mean_jct_s, p50_jct_s=j.p50_jct_s, p90_jct_s=j.p90_jct_s)
            row.update({f"T{t}": v for t, v in turns.get(k, pd.Series(dtype=float)).items()})
            row.update(Tlast_T1=ratio.get(k), cached_frac=w.cached_frac,
                       preemptions=w.preemptions, gb_to_host=w.bytes_offload / 1e9,
                       gb_to_gpu=w.bytes_onload / 1e9, lag_p99_ms=1000 * c.lag_p99_s)  # fmt: skip
        rows.append(row)
    order = ["sweep", "gpu", "dram", "jps", "policy", "sched"]
    return pd.DataFrame(rows).sort_values(order, kind="stable").reset_index(drop=True)


def _first(text: object) -> str:
    """The first line of a failure or note, short enough for a table cell."""
    s = str(text or "").strip().splitlines()
    line = s[0] if s else ""
    line = line.split("; last lines of")[0]
    return line if len(line) <= 90 else line[:87] + "..."


def _fixed(digits: int, thousands: bool = False) -> Callable[[Any], str]:
    sep = "," if thousands else ""
    return lambda v: f"{float(v):{sep}.{digits}f}"


def markdown(df: pd.DataFrame) -> str:
    """The table as a markdown pipe table, figures at the precision pages print them: JCT to
    0.1 s, turns to 0.01 s, cached share in %, GB to 0.1, lag in whole ms; "–" where a cell
    has no figure. Key columns that are the same in every row (one sweep, one GPU) are left
    out."""
    keys = [k for k in ["sweep", "gpu"] if df[k].nunique() > 1]
    turns = sorted((c for c in df.columns if c.startswith("T") and c[1:].isdigit()),
                   key=lambda c: int(c[1:]))  # fmt: skip
    cols: list[tuple[str, str, Callable[[Any], str]]] = [
        *((k, k, str) for k in keys),
        ("policy", "policy", str), ("sched", "sched", str), ("dram GB", "dram", str),
        ("JPS", "jps", lambda v: f"{v:g}"),
        ("mean JCT", "mean_jct_s", _fixed(1)), ("p50", "p50_jct_s", _fixed(1)),
        ("p90", "p90_jct_s", _fixed(1)),
        *((t, t, _fixed(2)) for t in turns),
        ("Tlast/T1", "Tlast_T1", _fixed(2)),
        ("cached share", "cached_frac", lambda v: f"{100 * v:.0f}%"),
        ("preemptions", "preemptions", _fixed(0)),
        ("GB to host", "gb_to_host", _fixed(1, True)), ("GB to GPU", "gb_to_gpu", _fixed(1, True)),
        ("lag p99 ms", "lag_p99_ms", _fixed(0)), ("state", "state", str),
    ]  # fmt: skip
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in df.to_dict("records"):
        cells = [DASH if isnan(r.get(key)) else how(r[key]) for _, key, how in cols]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
