"""``continuum_ttl``: keep a job's KV pinned in VRAM across its tool call, up to a TTL.

Seam for the policy registry (all a launcher needs)::

    from harness.plugins import continuum_ttl
    argv += continuum_ttl.server_args(settings, sched)  # --kv-transfer-config {...} (+ sched)
    env.update(continuum_ttl.server_env(settings))      # PYTHONPATH, KVBENCH_PLUGIN_STATS_DIR

``settings`` (all optional) are the fields of ``ContinuumTtlSettings``
(``harness/policies/continuum_ttl.py``: types, defaults, allowed values, one line each); the
connector builds that same dataclass from ``kv_connector_extra_config``, so an unknown key
or a bad value raises ``ConfigError`` naming ``policy.settings.<key>`` here as at planning.

Mechanism: a KV connector (``ContinuumTTLConnector``) loaded by mainline vLLM through
``kv_connector_module_path``. When a non-last turn of a hinted job finishes, the TTL rule
(``harness.plugins.ttl_rules``) says how long to pin; the connector takes one extra reference
on the turn's prefix-cached blocks (``BlockPool.touch``): they stay in the prefix cache and out
of the free queue, so other traffic cannot evict them. The reference is dropped
(``BlockPool.free_blocks``) when the job's next turn has been given its blocks (its prefix
hit took its own references first), when the TTL has run out *and* the job has no waiting
turn (Continuum §5.2), when the job's last turn ends or the job is aborted, and -- so pins
never starve admission -- when a waiting request would not fit in the free blocks or free
blocks fall under ``min_free_frac`` (the latest-arrived job's pin first, §5.2). With
``sched=program`` the scheduler class of ``harness.plugins.pin_first`` asks this connector
which jobs are pinned and serves their waiting turns first. Requests without a hint are never
pinned: plain vLLM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm.v1.request import RequestStatus

from harness.hints import Hint
from harness.plugins import compat, ttl_rules
from harness.plugins.connector import PolicyConnector, request_hint
from harness.policies.continuum_ttl import ContinuumTtl as SPEC
from harness.policies.continuum_ttl import ContinuumTtlSettings as Settings

logger = logging.getLogger(__name__)

POLICY = SPEC.name
MODULE = SPEC.module
CONNECTOR = SPEC.connector


def server_args(settings: Mapping[str, Any] | None = None, sched: str = "fcfs") -> list[str]:
    """The connector's flags and, for ``sched=program``, the scheduling flags too (the
    launcher adds ``--scheduling-policy priority`` itself, from ``cfg.sched``)."""
    s = SPEC.parse_settings(settings)
    program = ["--scheduling-policy", "priority"] if sched == "program" else []
    return SPEC.transfer_args(s) + program + SPEC.scheduler_args(s, sched)


def server_env(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    return SPEC.transfer_env(settings)


@dataclass
class Pin:
    hint: Hint
    blocks: list[Any]
    t_end: float
    expires: float
    arrival: float  # the job's first arrival: pressure releases the latest-arrived job first
    held: bool = False  # expired while the job had a waiting turn


class ContinuumTTLConnector(PolicyConnector):
    SPEC = SPEC
    POLICY = POLICY
    settings: Settings

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
        super().__init__(vllm_config, role, kv_cache_config)
        self.rule = ttl_rules.make(self.settings)
        self.pins: dict[str, Pin] = {}
        self.local: dict[str, int] = {}
        self.job_arrival: dict[str, float] = {}  # job -> first arrival (time.time() base)
        self.turn_end: dict[str, tuple[float, Hint]] = {}  # job -> its last turn's end
        self.waiting: dict[str, dict[str, float]] = {}  # job -> {request id: arrival}
        self.reordered: set[str] = set()  # "<reason>:<request id>", each counted once

    # ---- what the pin-first scheduler asks ----
    def pinned_jobs(self) -> frozenset[str]:
        return frozenset(self.pins)

    @staticmethod
    def job_of(request: Any) -> str | None:
        hint = request_hint(request)
        return hint.job_id if hint is not None else None

    def note_reordered(self, request: Any, reason: str) -> None:
        """The scheduler took ``request`` ahead of the base order (``pinned`` / ``preempted``)."""
        key = f"{reason}:{request.request_id}"
        if key not in self.reordered:
            if len(self.reordered) > 10_000:  # unhinted requests are never cleaned up
                self.reordered.clear()
            self.reordered.add(key)
            self.ledger.add("requests_reordered" if reason == "pinned" else "preempted_first")

    # ---- hooks ----
    def on_arrival(self, request: Any, hint: Hint) -> None:
        arrival = float(getattr(request, "arrival_time", 0.0) or time.time())
        self.job_arrival.setdefault(hint.job_id, arrival)
        self.waiting.setdefault(hint.job_id, {})[request.request_id] = arrival
        ended = self.turn_end.pop(hint.job_id, None)
        if ended is not None:
            self.rule.observe_gap(ended[1].tool, arrival - ended[0])

    def _not_waiting(self, request: Any, hint: Hint) -> float | None:
        queued = self.waiting.get(hint.job_id, {})
        arrival = queued.pop(request.request_id, None)
        if not queued:
            self.waiting.pop(hint.job_id, None)
        return arrival

    def on_finish(self, request: Any, blocks: list[Any], hint: Hint) -> None:
        self._not_waiting(request, hint)
        self.local.pop(request.request_id, None)
        self.reordered.difference_update(
            {f"pinned:{request.request_id}", f"preempted:{request.request_id}"})
        aborted = request.status == RequestStatus.FINISHED_ABORTED
        ends_job = hint.last or aborted
        self._unpin(hint.job_id, "pins_released_job_end" if ends_job else
                    "pins_released_next_turn")
        if ends_job:
            self._forget(hint.job_id)
        else:
            now = time.time()
            self.turn_end[hint.job_id] = (now, hint)
            if blocks:
                self._pin(hint, blocks, now, request.num_tokens)
        self._sync()

    def _forget(self, job: str) -> None:
        self.job_arrival.pop(job, None)
        self.turn_end.pop(job, None)
        self.waiting.pop(job, None)

    def _pin(self, hint: Hint, blocks: list[Any], now: float, context_tokens: int) -> None:
        ttl = min(self.rule.ttl(hint, context_tokens), self.settings.ttl_max_s)
        if ttl <= 0:
            self.ledger.add("pins_skipped")
            return
        compat.hold(self.pool, blocks)
        arrival = self.job_arrival.get(hint.job_id, now)
        self.pins[hint.job_id] = Pin(hint, blocks, now, now + ttl, arrival)
        self.ledger.add("pins_created")

    def _unpin(self, job: str, reason: str) -> bool:
        pin = self.pins.pop(job, None)
        if pin is None:
            return False
        compat.release(self.pool, pin.blocks)
        self.ledger.add(reason)
        return True

    def on_lookup(self, request: Any, num_local: int, hint: Hint | None) -> int:
        self.local[request.request_id] = num_local
        return 0

    def on_admit(self, request: Any, block_ids: list[int], num_external: int,
                 hint: Hint) -> None:
        arrival = self._not_waiting(request, hint)
        pinned = self._unpin(hint.job_id, "pins_released_next_turn")
        if arrival is not None and hint.turn > 1 and not pinned:
            self.rule.observe_wait(time.time() - arrival)  # the paper rule's T
        self.ledger.admit(job=hint.job_id, turn=hint.turn, prompt_tokens=request.num_tokens,
                          local_tokens=self.local.pop(request.request_id, 0),
                          host_tokens=num_external, was_pinned=pinned)
        self._sync()

    def on_tick(self, now: float) -> None:
        for job, pin in list(self.pins.items()):
            if pin.expires > now:
                continue
            if job in self.waiting:  # §5.2: expiry waits until the job's turn is admitted
                if not pin.held:
                    pin.held = True
                    self.ledger.add("pins_expiry_held")
                continue
            self._unpin(job, "pins_expired")
        floor = self.settings.min_free_frac * self.num_blocks
        while self.pins and self.pool.get_num_free_blocks() < floor:
            self._unpin(max(self.pins, key=lambda j: self.pins[j].arrival),
                        "pins_released_pressure")
        self._sync()

    def _latest(self, spare_job: str | None) -> str | None:
        """The pinned job that arrived last (other than ``spare_job``)."""
        others = [(p.arrival, j) for j, p in self.pins.items() if j != spare_job]
        return max(others)[1] if others else None

    def held_blocks(self, job: str) -> int:
        pin = self.pins.get(job)
        return len(pin.blocks) if pin is not None else 0

    def yield_one(self, spare_job: str | None) -> bool:
        job = self._latest(spare_job)
        if job is None:
            return False
        logger.info("releasing pin of job %s (latest arrived) to admit waiting work", job)
        return self._unpin(job, "pins_released_pressure")

    def has_timed_work(self) -> bool:
        return bool(self.pins)

    def drop_all(self) -> None:
        for job in list(self.pins):
            self._unpin(job, "pins_released_job_end")
        self._sync()

    def _sync(self) -> None:
        self.ledger.dirty = True
        now = time.time()
        self.ledger.gauges["pins_active"] = len(self.pins)
        self.ledger.gauges["pinned_blocks"] = sum(len(p.blocks) for p in self.pins.values())
        self.ledger.jobs = {
            j: {"state": "pinned", "turn": p.hint.turn, "blocks": len(p.blocks),
                "expires_in_s": round(p.expires - now, 3), "held": p.held,
                "waiting": j in self.waiting}
            for j, p in self.pins.items()
        }
        self.ledger.info["ttl_rule"] = self.rule.state()
