"""Names, colours and markers shared by the figures and the tables.

A figure's series is a (policy, scheduling order) pair (:class:`Series`): the policy gives
its colour and marker; the engine's default order (``sched=fcfs``) draws as it always did,
another order (``program``: program-level FCFS) keeps the colour and gets a dashed line, a
half-filled marker and the label ``<policy> · program order``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import matplotlib

from harness.cellkey import BY_NAME

matplotlib.use("Agg")

POLICY_LABELS = {
    "fcfs": "FCFS",
    "lmcache": "LMCache",
    "continuum": "Continuum",
    "continuum_ttl": "Continuum (TTL)",
    "native_offload": "Native offload",
    "predictive_prefetch": "Predictive prefetch",
    "predictive_fixed": "Prefetch (fixed lead)",
    "predictive_mean": "Prefetch (mean)",
    "predictive_p50": "Prefetch (p50)",
    "predictive_learned": "Prefetch (learned)",
    "predictive_scored": "Scored",
    "scored_learned": "Scored (learned)",
    "continuum_fixed": "Continuum (fixed TTL)",
    "continuum_paper": "Continuum (paper TTL)",
}
POLICY_COLORS = {
    "fcfs": "#d62728",
    "lmcache": "#1f77b4",
    "continuum": "#2ca02c",
    "continuum_ttl": "#17becf",
    "native_offload": "#9467bd",
    "predictive_prefetch": "#ff7f0e",
    "predictive_fixed": "#8c564b",
    "predictive_mean": "#e377c2",
    "predictive_p50": "#bcbd22",
    "predictive_learned": "#7f7f7f",
    "predictive_scored": "#393b79",
    "scored_learned": "#637939",
    "continuum_fixed": "#98df8a",
    "continuum_paper": "#005a32",
}
POLICY_MARKERS = {"fcfs": "o", "lmcache": "s", "continuum": "^", "continuum_ttl": "v",
                  "native_offload": "D", "predictive_prefetch": "P", "predictive_fixed": "X",
                  "predictive_mean": "h", "predictive_p50": "*", "predictive_learned": "p",
                  "predictive_scored": "<", "scored_learned": ">", "continuum_fixed": "^",
                  "continuum_paper": "v"}
_FALLBACK_COLORS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939"]
_FALLBACK_MARKERS = ["X", "h", "*", "p", "<", ">"]
SWEEP_LINESTYLES = ["-", "--", ":", "-."]

DEFAULT_SCHED = BY_NAME["sched"].legacy  # the engine's default order: drawn as before the axis
SCHED_LABELS = {"fcfs": "engine order", "program": "program order"}
SCHED_ORDER = ["fcfs", "program"]
SCHED_LINESTYLES = {"program": "--"}  # another order: dashed when one sweep is drawn
SCHED_FILLSTYLES = {"program": "top"}  # and a half-filled marker (hollow: provisional)
_FALLBACK_SCHED_LINESTYLES = ["-.", ":"]
_FALLBACK_SCHED_FILLSTYLES = ["bottom", "left", "right"]

STATE_COLORS = {
    "ok": "#e6f4ea",
    "unfinished": "#fff4ce",
    "missing": "#eeeeee",
    "running": "#fff4ce",
    "failed": "#f8d7da",
    "lag": "#f8d7da",
    "no_data": "#f8d7da",
    "jobs_failed": "#f8d7da",
    "incomplete": "#f8d7da",
}
STATE_SHORT = {"missing": "missing", "failed": "FAILED", "lag": "LAG", "running": "running",
               "no_data": "no data", "jobs_failed": "jobs failed", "incomplete": "incomplete",
               "unfinished": "no DONE", "ok": "ok"}


def policy_label(p: str) -> str:
    return POLICY_LABELS.get(p, p)


def _stable_index(p: str, n: int) -> int:
    return sum(map(ord, p)) % n


def policy_color(p: str) -> str:
    return POLICY_COLORS.get(p) or _FALLBACK_COLORS[_stable_index(p, len(_FALLBACK_COLORS))]


def policy_marker(p: str) -> str:
    return POLICY_MARKERS.get(p) or _FALLBACK_MARKERS[_stable_index(p, len(_FALLBACK_MARKERS))]


def policy_order(policies) -> list[str]:
    known = [p for p in POLICY_LABELS if p in set(policies)]
    return known + sorted(set(policies) - set(known))


def gpu_label(g: str) -> str:
    return g.upper() if g != "cpu" else "CPU"


def jps_label(j: float) -> str:
    return f"{j:g}"


def sched_label(s: str) -> str:
    return SCHED_LABELS.get(s, f"{s} order")


def sched_order(scheds: Iterable[str]) -> list[str]:
    known = [s for s in SCHED_ORDER if s in set(scheds)]
    return known + sorted(set(scheds) - set(known))


@dataclass(frozen=True)
class Series:
    """What one line of a figure stands for: a policy under one scheduling order."""

    policy: str
    sched: str = DEFAULT_SCHED

    @property
    def default(self) -> bool:
        """The engine's default order: drawn and named as the policy alone."""
        return self.sched == DEFAULT_SCHED

    @property
    def label(self) -> str:
        """``LMCache``, ``FCFS · program order``."""
        p = policy_label(self.policy)
        return p if self.default else f"{p} · {sched_label(self.sched)}"

    @property
    def tag(self) -> str:
        """What tells this series from its policy's default-order one ("" for that one)."""
        return "" if self.default else sched_label(self.sched)

    @property
    def color(self) -> str:
        return policy_color(self.policy)

    @property
    def marker(self) -> str:
        return policy_marker(self.policy)

    @property
    def linestyle(self) -> str:
        """The line style that names the order (solid for the default order)."""
        if self.default:
            return "-"
        return SCHED_LINESTYLES.get(self.sched) or _FALLBACK_SCHED_LINESTYLES[
            _stable_index(self.sched, len(_FALLBACK_SCHED_LINESTYLES))]

    def fill(self) -> dict[str, Any]:
        """Marker keywords that name the order ({} for the default order: filled)."""
        if self.default:
            return {}
        fs = SCHED_FILLSTYLES.get(self.sched) or _FALLBACK_SCHED_FILLSTYLES[
            _stable_index(self.sched, len(_FALLBACK_SCHED_FILLSTYLES))]
        return {"fillstyle": fs, "markerfacecoloralt": "white"}


def series_order(pairs: Iterable[tuple[str, str]]) -> list[Series]:
    """(policy, sched) pairs as series in legend order: policies as policy_order, each
    policy's orders default first."""
    pairs = set(pairs)
    return [Series(p, s) for p in policy_order({p for p, _ in pairs})
            for s in sched_order({s for q, s in pairs if q == p})]


def series_label(policy: str, sched: str = DEFAULT_SCHED) -> str:
    return Series(policy, sched).label
