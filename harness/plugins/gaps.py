"""Each job's tool gap as a connector sees it: the prediction made when a turn ended, the gap
that followed (turn end to the next turn's arrival at the server), and how wrong it was.

``GapTracker`` asks the predictor when a turn ends, feeds it the gap when the job's next turn
arrives, and returns the pair; :func:`error_terms` turns a pair into the per-tool counters
the stats ledger keeps (``stats.TOOL_COUNTERS``), and :func:`summary` turns a tool's counters
into what a cell reports: ``n``, ``bias_s`` (mean predicted - actual; negative: predictions
too short), ``mae_s`` and ``early_share`` (share of returns before the predicted time).

The gap is measured on the server's clock: the client's tool time plus its own delays between
receiving a turn's answer and sending the next turn, so even ``oracle`` has a small negative
bias. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.hints import Hint
from harness.plugins.predictors import Predictor


@dataclass(frozen=True)
class Gap:
    tool: str  # the tool that followed the turn ("" when unnamed)
    predicted: float  # what the predictor said when the turn ended (s)
    actual: float  # turn end to next arrival (s)


@dataclass
class _Pending:
    t_end: float
    hint: Hint
    predicted: float


class GapTracker:
    """Turn end -> prediction; next arrival -> observation and the (predicted, actual) pair."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.pending: dict[str, _Pending] = {}

    def turn_ended(self, hint: Hint, now: float) -> float:
        """The predicted gap after this (non-last) turn; remembered until the job returns."""
        predicted = max(self.predictor.predict(hint), 0.0)
        self.pending[hint.job_id] = _Pending(now, hint, predicted)
        return predicted

    def arrived(self, job: str, arrival: float) -> Gap | None:
        """The job's next turn arrived: teach the predictor, return the pair (None: no turn of
        this job ended since the tracker last saw it)."""
        p = self.pending.pop(job, None)
        if p is None:
            return None
        gap = max(arrival - p.t_end, 0.0)
        self.predictor.observe(p.hint, gap)
        return Gap(p.hint.tool, p.predicted, gap)

    def forget(self, job: str) -> None:
        self.pending.pop(job, None)


def error_terms(gap: Gap) -> dict[str, float]:
    """One return as increments of the per-tool counters (``stats.TOOL_COUNTERS``)."""
    err = gap.predicted - gap.actual
    return {"predictions": 1.0, "prediction_over_seconds": max(err, 0.0),
            "prediction_under_seconds": max(-err, 0.0),
            "returns_before_prediction": float(gap.actual < gap.predicted)}  # fmt: skip


def summary(totals: dict[str, float]) -> dict[str, Any]:
    """A tool's counters as n, bias, MAE and the share of returns before the prediction."""
    n = totals.get("predictions", 0.0)
    if not n:
        return {"n": 0, "bias_s": None, "mae_s": None, "early_share": None}
    over = totals.get("prediction_over_seconds", 0.0)
    under = totals.get("prediction_under_seconds", 0.0)
    return {"n": int(n), "bias_s": round((over - under) / n, 4),
            "mae_s": round((over + under) / n, 4),
            "early_share": round(totals.get("returns_before_prediction", 0.0) / n, 4)}


def summaries(tools: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per tool, and ``all`` tools together."""
    every: dict[str, float] = {}
    for row in tools.values():
        for k, v in row.items():
            every[k] = every.get(k, 0.0) + v
    return {"tools": {t: summary(row) for t, row in sorted(tools.items())},
            "all": summary(every)}
