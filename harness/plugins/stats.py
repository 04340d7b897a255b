"""What the policy connectors count, and the two ways it leaves the engine.

1. **Prometheus, through vLLM's own connector-stats path** (0.26 and 0.32 alike): the
   scheduler-side connector returns a :class:`PolicyStats` from ``get_kv_connector_stats``;
   vLLM ships its ``data`` to the API-server process, which calls
   ``build_kv_connector_stats`` / ``build_prom_metrics`` of the connector class and so
   :class:`PolicyPromMetrics.observe`. The samples appear on ``/metrics`` as
   ``kvbench:<name>`` (gauges) and ``kvbench:<name>_total`` (counters), with vLLM's
   ``model_name`` / ``engine`` labels.
2. **A JSON snapshot** in ``$KVBENCH_PLUGIN_STATS_DIR/<policy>.json`` (when the variable is
   set), rewritten atomically (temp file + rename) at most every 0.2 s: cumulative counters,
   gauges, per-job state, the last admissions (how many prompt tokens each turn found in
   VRAM vs. loaded from the host tier), the last decisions of ``predictive_scored`` and
   ``info`` (what the policy learned: the predictor's error per tool, measured rates, a TTL
   rule's state). The harness copies it into the cell folder; tests read it.

Per-tool counters (``TOOL_COUNTERS``: how the tool-time predictor did) carry a ``tool`` label
on ``/metrics`` (``kvbench:predictions_total{tool="grep"}``; ``tool=""`` for unnamed tools)
and are summarised per tool in the snapshot's ``info.prediction`` (``gaps.summaries``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
)

# The names and help texts live in harness.plugins.counters (no vLLM import: the analysis
# reads them too); WORKER_COUNTERS is re-exported for the connectors' users.
from harness import atomic
from harness.plugins.counters import COUNTERS, GAUGES, PREFIX, TOOL_COUNTERS, WORKER_COUNTERS

logger = logging.getLogger(__name__)

STATS_DIR_ENV = "KVBENCH_PLUGIN_STATS_DIR"
__all__ = ["COUNTERS", "GAUGES", "TOOL_COUNTERS", "WORKER_COUNTERS", "Ledger", "PolicyPromMetrics",
           "PolicyStats"]


@dataclass
class PolicyStats(KVConnectorStats):
    """``data = {"counters": {name: delta}, "gauges": {name: value},
    "tools": {tool: {name: delta}}}``."""

    data: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        self.data = {}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        counters = dict(self.data.get("counters", {}))
        for k, v in other.data.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
        gauges = {**self.data.get("gauges", {}), **other.data.get("gauges", {})}
        tools = {t: dict(row) for t, row in self.data.get("tools", {}).items()}
        for t, row in other.data.get("tools", {}).items():
            mine = tools.setdefault(t, {})
            for k, v in row.items():
                mine[k] = mine.get(k, 0) + v
        return PolicyStats(data={"counters": counters, "gauges": gauges, "tools": tools})

    def reduce(self) -> dict[str, int | float]:
        return {**self.data.get("counters", {}), **self.data.get("gauges", {})}

    def is_empty(self) -> bool:
        return not any(self.data.get(k) for k in ("counters", "gauges", "tools"))


class PolicyPromMetrics(KVConnectorPromMetrics):
    """Registers ``kvbench:*`` gauges and counters; fed with :class:`PolicyStats` data."""

    def __init__(self, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._g = {n: self._per_engine(self._gauge_cls, n, d) for n, d in GAUGES.items()}
        self._c = {n: self._per_engine(self._counter_cls, n, d) for n, d in COUNTERS.items()}
        self._t = {n: self._counter_cls(name=f"{PREFIX}{n}", documentation=d,
                                        labelnames=[*self._labelnames, "tool"])
                   for n, d in TOOL_COUNTERS.items()}  # fmt: skip

    def _per_engine(self, cls, name: str, doc: str) -> dict[int, Any]:
        metric = cls(name=f"{PREFIX}{name}", documentation=doc, labelnames=self._labelnames)
        return {i: metric.labels(*v) for i, v in self.per_engine_labelvalues.items()}

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        for k, v in transfer_stats_data.get("counters", {}).items():
            if k in self._c and v > 0:
                self._c[k][engine_idx].inc(v)
        for k, v in transfer_stats_data.get("gauges", {}).items():
            if k in self._g:
                self._g[k][engine_idx].set(v)
        engine = self.per_engine_labelvalues.get(engine_idx, [])
        for tool, row in transfer_stats_data.get("tools", {}).items():
            for k, v in row.items():
                if k in self._t and v > 0:
                    self._t[k].labels(*engine, str(tool)).inc(v)


class Ledger:
    """Scheduler-side counters + gauges, the delta for vLLM and the JSON snapshot."""

    def __init__(self, policy: str, settings: dict[str, Any]):
        self.policy = policy
        self.settings = settings
        self.totals: dict[str, int | float] = {k: 0 for k in COUNTERS
                                               if k not in WORKER_COUNTERS}
        self.gauges = dict.fromkeys(GAUGES, 0)
        self.tools: dict[str, dict[str, float]] = {}  # tool -> TOOL_COUNTERS totals
        self._sent = dict(self.totals)
        self._sent_tools: dict[str, dict[str, float]] = {}
        self._sent_gauges: dict[str, Any] = {}
        self.admissions: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []  # predictive_scored's, with their inputs
        self.jobs: dict[str, Any] = {}
        self.info: dict[str, Any] = {}  # policy-specific state (e.g. what a TTL rule learned)
        directory = os.environ.get(STATS_DIR_ENV)
        self._path = Path(directory) / f"{policy}.json" if directory else None
        self._written = 0.0
        self._write_failed = False  # the last snapshot could not be written (warned once)
        self.dirty = True

    def add(self, name: str, n: int | float = 1) -> None:
        self.totals[name] += n
        self.dirty = True

    def add_tool(self, tool: str, increments: dict[str, float]) -> None:
        row = self.tools.setdefault(tool, dict.fromkeys(TOOL_COUNTERS, 0.0))
        for k, v in increments.items():
            row[k] += v
        self.dirty = True

    def admit(self, **row: Any) -> None:
        self.admissions = [*self.admissions[-999:], {"t": time.time(), **row}]
        self.dirty = True

    def decide(self, **row: Any) -> None:
        self.decisions = [*self.decisions[-999:], {"t": time.time(), **row}]
        self.dirty = True

    def take_delta(self) -> PolicyStats | None:
        delta = {k: v - self._sent[k] for k, v in self.totals.items() if v != self._sent[k]}
        gauges = {k: v for k, v in self.gauges.items() if self._sent_gauges.get(k) != v}
        tools = {}
        for t, row in self.tools.items():
            sent = self._sent_tools.get(t, {})
            d = {k: v - sent.get(k, 0.0) for k, v in row.items() if v != sent.get(k, 0.0)}
            if d:
                tools[t] = d
        if not delta and not gauges and not tools:
            return None
        self._sent = dict(self.totals)
        self._sent_gauges = dict(self.gauges)
        self._sent_tools = {t: dict(row) for t, row in self.tools.items()}
        return PolicyStats(data={"counters": delta, "gauges": dict(self.gauges), "tools": tools})

    def maybe_write(self, force: bool = False) -> None:
        now = time.time()
        if self._path is None or not self.dirty or (not force and now - self._written < 0.2):
            return
        self._written, self.dirty = now, False
        snap = {"policy": self.policy, "t": now, "settings": self.settings,
                "counters": self.totals, "gauges": self.gauges, "jobs": self.jobs,
                "info": self.info, "admissions": self.admissions, "decisions": self.decisions}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(snap, default=str).encode()
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")  # processes share it
        try:
            atomic.replace(self._path, lambda f: f.write(data), tmp=tmp)
        except OSError as e:  # a full disk must not stop the engine: try again next time
            self.dirty = True
            if not self._write_failed:
                logger.warning("policy stats not written to %s: %s (retried)", self._path, e)
            self._write_failed = True
            return
        self._write_failed = False
