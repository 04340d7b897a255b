"""What kvbench's own policies counted in each cell: the tool-time predictor's error per tool
(``predictive_*``, ``predictive_scored``) and the keep / offload / drop decisions and their
waste (``predictive_scored``; the prefetch counters of every ``predictive_*``).

Read from the cell's Prometheus samples (``metrics.parquet``, ``kvbench:<name>_total``, the
names in harness/plugins/counters.py) as increases over the cell, like analysis/why.py's
counters, so a sweep folder is all it needs (the ``<policy>.json`` snapshot holds the same
per-tool summary; it is not read here). Per tool, with n returns whose predicted gap was
recorded, ``over`` and ``under`` the summed seconds by which predictions were longer or
shorter than the gap:

- ``bias_s`` = (over - under) / n: positive when the predictor waits too long on average;
- ``mae_s`` = (over + under) / n: the mean absolute error;
- ``early_share`` = returns before the predicted time / n: the share of turns that came back
  before their prefetch was due (a prefetch-late turn, unless the KV was kept).

A cell's ``(all)`` row pools its tools. Cells of other policies have no rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import KEYS
from analysis.why import counter_increase, label_value
from harness.plugins.counters import TOOL_COUNTERS, counter

ALL_TOOLS = "(all)"
TOOL_NAMES = {counter(n): n for n in TOOL_COUNTERS}
# the decisions and what came of them, in the order the report shows them
DECISIONS = ("kept", "offloaded", "dropped", "redecisions", "prefetch_hits", "prefetch_late",
             "wasted_offloads", "offloads_unread", "wasted_prefetches", "offload_skipped")
DECISION_NAMES = {counter(n): n for n in DECISIONS}
METRIC_NAMES = [*TOOL_NAMES, *DECISION_NAMES]
PREDICTION_COLUMNS = KEYS + ["tool", "predictions", "bias_s", "mae_s", "early_share"]


def predictions(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and tool (and the cell's ``(all)`` row): n, bias, MAE, early share."""
    inc = counter_increase(metrics, list(TOOL_NAMES))
    if inc.empty:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    inc = inc.assign(tool=label_value(inc["labels"], "tool").replace("unlabelled", ""),
                     counter=inc["name"].map(TOOL_NAMES))
    wide = inc.pivot_table(index=KEYS + ["tool"], columns="counter", values="increase",
                           aggfunc="sum", fill_value=0.0)
    wide.columns.name = None
    for n in TOOL_COUNTERS:
        if n not in wide:
            wide[n] = 0.0
    per_tool = wide.reset_index()
    pooled = per_tool.groupby(KEYS, sort=False)[list(TOOL_COUNTERS)].sum().reset_index()
    out = pd.concat([per_tool, pooled.assign(tool=ALL_TOOLS)], ignore_index=True)
    out = out[out["predictions"] > 0]
    n = out["predictions"]
    over, under = out["prediction_over_seconds"], out["prediction_under_seconds"]
    out = out.assign(bias_s=(over - under) / n, mae_s=(over + under) / n,
                     early_share=out["returns_before_prediction"] / n)
    # the cell's own tools by name, then its pooled row
    out = out.assign(_all=out["tool"] == ALL_TOOLS).sort_values(KEYS + ["_all", "tool"])
    return out[PREDICTION_COLUMNS].reset_index(drop=True)


def decisions(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per cell that counted any decision or prefetch: each counter's total."""
    inc = counter_increase(metrics, list(DECISION_NAMES))
    if inc.empty:
        return pd.DataFrame(columns=KEYS + list(DECISIONS))
    wide = inc.assign(counter=inc["name"].map(DECISION_NAMES)).pivot_table(
        index=KEYS, columns="counter", values="increase", aggfunc="sum", fill_value=0.0)
    wide.columns.name = None
    for n in DECISIONS:
        if n not in wide:
            wide[n] = np.nan  # no cell of these sweeps exported it
    out = wide.reset_index()[KEYS + list(DECISIONS)]
    # every kvbench policy exports every counter: keep the cells where something was counted
    return out[out[list(DECISIONS)].fillna(0).gt(0).any(axis=1)].reset_index(drop=True)
