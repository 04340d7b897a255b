"""Names, colours and markers shared by the figures and the tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

POLICY_LABELS = {
    "fcfs": "FCFS",
    "lmcache": "LMCache",
    "continuum": "Continuum",
    "continuum_ttl": "Continuum (TTL)",
    "native_offload": "Native offload",
    "predictive_prefetch": "Predictive prefetch",
}
POLICY_COLORS = {
    "fcfs": "#d62728",
    "lmcache": "#1f77b4",
    "continuum": "#2ca02c",
    "continuum_ttl": "#17becf",
    "native_offload": "#9467bd",
    "predictive_prefetch": "#ff7f0e",
}
POLICY_MARKERS = {"fcfs": "o", "lmcache": "s", "continuum": "^", "continuum_ttl": "v",
                  "native_offload": "D", "predictive_prefetch": "P"}
_FALLBACK_COLORS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939"]
_FALLBACK_MARKERS = ["X", "h", "*", "p", "<", ">"]
SWEEP_LINESTYLES = ["-", "--", ":", "-."]

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
