"""``continuum_ttl``: keep a job's KV pinned in VRAM across its tool call, up to a TTL.

Seam for the policy registry (all a launcher needs)::

    from harness.plugins import continuum_ttl
    argv += continuum_ttl.server_args(settings)       # --kv-transfer-config {...}
    env.update(continuum_ttl.server_env(settings))    # PYTHONPATH, KVBENCH_PLUGIN_STATS_DIR

``settings`` (all optional) are the fields of ``ContinuumTtlSettings``
(``harness/policies/continuum_ttl.py``: types, defaults, allowed values, one line each); the
connector builds that same dataclass from ``kv_connector_extra_config``, so an unknown key
or a bad value raises ``ConfigError`` naming ``policy.settings.<key>`` here as at planning.

Mechanism: a KV connector (``ContinuumTTLConnector``) loaded by mainline vLLM through
``kv_connector_module_path``. When a non-last turn of a hinted job finishes, the connector
takes one extra reference on the turn's prefix-cached blocks (``BlockPool.touch``): they stay
in the prefix cache and out of the free queue, so other traffic cannot evict them. The
reference is dropped (``BlockPool.free_blocks``) when the job's next turn has been given its
blocks (its prefix hit took its own references first), when the TTL runs out, when the job's
last turn ends or the job is aborted, and -- so pins never starve admission -- when a waiting
request would not fit in the free blocks (oldest pin of another job first) or free blocks
fall under ``min_free_frac``. Requests without a hint are never pinned: plain vLLM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vllm.v1.request import RequestStatus

from harness.hints import Hint
from harness.plugins import compat
from harness.plugins.connector import PolicyConnector
from harness.policies.continuum_ttl import TTL_RULES as TTL_RULE_NAMES
from harness.policies.continuum_ttl import ContinuumTtl as SPEC
from harness.policies.continuum_ttl import ContinuumTtlSettings as Settings

logger = logging.getLogger(__name__)

POLICY = SPEC.name
MODULE = SPEC.module
CONNECTOR = SPEC.connector


class TtlRule(Protocol):
    def ttl(self, hint: Hint) -> float: ...

    def observe(self, hint: Hint, gap_s: float) -> None: ...


TTL_RULES: dict[str, type] = {}


def ttl_rule(name: str):
    def deco(cls: type) -> type:
        TTL_RULES[name] = cls
        return cls

    return deco


@ttl_rule("fixed")
class FixedTtl:
    def __init__(self, settings: Settings):
        self.ttl_s = settings.ttl_s

    def ttl(self, hint: Hint) -> float:
        return self.ttl_s

    def observe(self, hint: Hint, gap_s: float) -> None:
        return


@ttl_rule("running_mean")
class RunningMeanTtl:
    """``ttl_scale`` x the mean gap seen after this tool (``kvb_tool``, else one pool)."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.sums: dict[str, tuple[float, int]] = {}

    def ttl(self, hint: Hint) -> float:
        total, n = self.sums.get(hint.tool, (0.0, 0))
        return self.s.ttl_s if n == 0 else self.s.ttl_scale * total / n

    def observe(self, hint: Hint, gap_s: float) -> None:
        total, n = self.sums.get(hint.tool, (0.0, 0))
        self.sums[hint.tool] = (total + gap_s, n + 1)


# The Continuum paper's TTL rule goes here as @ttl_rule("paper") with the same two methods
# (and its name in harness.policies.continuum_ttl.TTL_RULES, the setting's allowed values).

assert set(TTL_RULES) == set(TTL_RULE_NAMES), "harness.policies.continuum_ttl.TTL_RULES is stale"


def server_args(settings: Mapping[str, Any] | None = None) -> list[str]:
    return SPEC.transfer_args(settings)


def server_env(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    return SPEC.transfer_env(settings)


@dataclass
class Pin:
    hint: Hint
    blocks: list[Any]
    t_end: float
    expires: float


class ContinuumTTLConnector(PolicyConnector):
    SPEC = SPEC
    POLICY = POLICY
    settings: Settings

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
        super().__init__(vllm_config, role, kv_cache_config)
        self.rule: TtlRule = TTL_RULES[self.settings.ttl_rule](self.settings)
        self.pins: dict[str, Pin] = {}  # insertion order = age
        self.local: dict[str, int] = {}

    def on_finish(self, request: Any, blocks: list[Any], hint: Hint) -> None:
        self._unpin(hint.job_id, "pins_released_next_turn")
        aborted = request.status == RequestStatus.FINISHED_ABORTED
        if hint.last or aborted or not blocks:
            self.ledger.jobs.pop(hint.job_id, None)
        else:
            self._pin(hint, blocks)
        self._sync()

    def _pin(self, hint: Hint, blocks: list[Any]) -> None:
        now = time.time()
        ttl = min(self.rule.ttl(hint), self.settings.ttl_max_s)
        compat.hold(self.pool, blocks)
        self.pins[hint.job_id] = Pin(hint, blocks, now, now + ttl)
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
        pin = self.pins.get(hint.job_id)
        if pin is not None:
            self.rule.observe(pin.hint, max(request.arrival_time - pin.t_end, 0.0))
            self._unpin(hint.job_id, "pins_released_next_turn")
        self.ledger.admit(job=hint.job_id, turn=hint.turn, prompt_tokens=request.num_tokens,
                          local_tokens=self.local.pop(request.request_id, 0),
                          host_tokens=num_external, was_pinned=pin is not None)
        self._sync()

    def on_tick(self, now: float) -> None:
        for job in [j for j, p in self.pins.items() if p.expires <= now]:
            self._unpin(job, "pins_expired")
        floor = self.settings.min_free_frac * self.num_blocks
        while self.pins and self.pool.get_num_free_blocks() < floor:
            self._unpin(next(iter(self.pins)), "pins_released_pressure")
        self._sync()

    def yield_one(self, spare_job: str | None) -> bool:
        job = next((j for j in self.pins if j != spare_job), None)
        if job is not None:
            logger.info("releasing pin of job %s to admit waiting work", job)
        return job is not None and self._unpin(job, "pins_released_pressure")

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
                "expires_in_s": round(p.expires - now, 3)}
            for j, p in self.pins.items()
        }
