"""``predictive_prefetch``: KV to host during the tool call, back into VRAM just before it ends.

Seam for the policy registry (all a launcher needs)::

    from harness.plugins import predictive_prefetch
    argv += predictive_prefetch.server_args(settings)     # --kv-transfer-config {...}
    env.update(predictive_prefetch.server_env(settings))  # PYTHONPATH, stats dir

``settings`` (all optional) are the fields of ``PredictivePrefetchSettings``
(``harness/policies/predictive_prefetch.py``: types, defaults, allowed values, one line each);
the connector builds that same dataclass from ``kv_connector_extra_config``, so an unknown
key or a bad value raises ``ConfigError`` naming ``policy.settings.<key>`` here as at
planning. ``host_tier_gb`` must be given here (the launcher sets it from ``dram``).

Mechanism (one KV connector, ``PredictivePrefetchConnector``, loaded through
``kv_connector_module_path``; no scheduler class):

1. A non-last hinted turn finishes: the predictor (``harness.plugins.predictors``, through a
   ``gaps.GapTracker`` that also records how wrong it was) says when the job returns, and
   :meth:`choose` what to do with its KV: here always *offload*. Its prefix-cached blocks are
   held for one more step, copied to the host tier in that step (worker ``start_load_kv``),
   then released: the job holds nothing in VRAM (its blocks stay in the prefix cache only as
   evictable, free blocks).
2. At ``end + predicted - lead_s`` the connector looks up each block hash: blocks still
   cached are re-held; missing ones get fresh VRAM blocks, filled from the host tier in that
   step and published in the prefix cache once the (emulated) transfer is done.
3. The next turn's ordinary prefix-cache lookup finds them (``cached_tokens``); once it got
   its blocks the connector drops its hold and frees the host slots.
Holds yield to admission like ``continuum_ttl``'s pins (oldest first).

The other two actions, used by ``predictive_scored`` (a subclass that overrides
:meth:`choose`, :meth:`recheck` and :meth:`_victims`), are applied here too: *keep* holds the
turn's blocks in VRAM (``continuum_ttl``'s pin: state ``kept``) and *drop* holds nothing.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.request import RequestStatus

from harness.errors import ConfigError
from harness.hints import Hint
from harness.plugins import compat, gaps, predictors
from harness.plugins.connector import PolicyConnector
from harness.policies.predictive_prefetch import PredictivePrefetch as SPEC
from harness.policies.predictive_prefetch import PredictivePrefetchSettings as Settings

logger = logging.getLogger(__name__)

POLICY = SPEC.name
MODULE = SPEC.module
CONNECTOR = SPEC.connector
HELD = ("kept", "inflight", "vram")  # states whose blocks the policy holds in VRAM
ACTION_COUNTER = {"keep": "kept", "offload": "offloaded", "drop": "dropped"}


def server_args(settings: Mapping[str, Any] | None = None) -> list[str]:
    return SPEC.transfer_args(settings)


def server_env(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    return SPEC.transfer_env(settings)


@dataclass
class Entry:
    """A job's KV between two turns. Offloaded: saving -> host -> inflight -> vram; kept:
    kept (held in VRAM, no host copy)."""

    hint: Hint
    keys: list[tuple[Any, int]]  # (prefix-cache key, tokens it covers) per block
    plain: list[Any]  # the request's block hashes, to match the next turn's prompt
    slots: list[int]  # host block per key (none while kept)
    t_end: float
    due: float  # start the prefetch then
    expires: float  # drop everything then (the first predicted return + hold_s)
    state: str = "saving"
    step: int = 0  # the step whose metadata carries this entry's copies
    held: list[Any] = field(default_factory=list)
    fresh: list[tuple[Any, int, Any]] = field(default_factory=list)
    ready: float = 0.0
    late: bool = False
    recheck: float = math.inf  # decide again then if the job is still out (predictive_scored)
    returns: float = math.inf  # when the job is expected back
    back: bool = False  # the job's next turn has arrived (it waits to be admitted)
    read: bool = False  # the host copy was read (a prefetch copy or a late load)
    copied: bool = False  # a prefetch copied blocks into VRAM that no turn has taken yet

    @property
    def tokens(self) -> int:
        return self.keys[-1][1] if self.keys else 0


class PredictivePrefetchConnector(PolicyConnector):
    SPEC = SPEC
    POLICY = POLICY
    settings: Settings

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
        super().__init__(vllm_config, role, kv_cache_config)
        self.predictor = predictors.make(self.settings.predictor, self.settings)
        self.gaps = gaps.GapTracker(self.predictor)
        tier_gb = self.settings.host_tier_gb
        assert tier_gb is not None  # resolve_settings refuses null
        self.n_host = int(tier_gb * 2**30 // max(self.block_bytes, 1))
        self.free_slots = list(range(self.n_host))  # ascending
        self.entries: dict[str, Entry] = {}
        self.local: dict[str, int] = {}
        self.loads: dict[str, int] = {}  # request id -> first block to load from host

    @classmethod
    def resolve_settings(cls, raw: dict[str, Any]) -> Settings:
        s: Settings = super().resolve_settings(raw)
        if s.host_tier_gb is None:
            raise ConfigError(
                f"policy.settings.host_tier_gb=null: the {cls.POLICY} connector needs the "
                f"host tier's size in GiB (the launcher sets it from dram.gb)"
            )
        return s

    def host_blocks(self) -> int:
        return self.n_host

    # ---- arrival: the gap is over ----
    def on_arrival(self, request: Any, hint: Hint) -> None:
        arrival = float(getattr(request, "arrival_time", 0.0) or time.time())
        gap = self.gaps.arrived(hint.job_id, arrival)
        if gap is not None:
            self.ledger.add_tool(gap.tool, gaps.error_terms(gap))
        e = self.entries.get(hint.job_id)
        if e is not None:
            e.back, e.returns, e.recheck = True, arrival, math.inf  # nothing left to decide
            if e.state == "saving":
                self.ledger.add("wasted_offloads")

    # ---- turn end: decide ----
    def on_finish(self, request: Any, blocks: list[Any], hint: Hint) -> None:
        self._drop(hint.job_id)
        aborted = request.status == RequestStatus.FINISHED_ABORTED
        if hint.last or aborted:
            self.gaps.forget(hint.job_id)
            return self._sync()
        now = time.time()
        predicted = self.gaps.turn_ended(hint, now)
        if not blocks:
            return self._sync()
        action = self.choose(blocks, hint, predicted)
        e = self._entry(request, blocks, hint, now, predicted)
        if action == "keep":
            compat.hold(self.pool, blocks)
            e.held, e.state, e.due = blocks, "kept", math.inf
        elif action == "offload" and not self._offload(e, blocks):
            return self._sync()
        self.ledger.add(ACTION_COUNTER[action])
        if action != "drop":
            self.entries[hint.job_id] = e
        self._sync()

    def choose(self, blocks: list[Any], hint: Hint, predicted: float) -> str:
        """keep | offload | drop for a turn's KV; this policy always offloads."""
        return "offload"

    def _entry(self, request: Any, blocks: list[Any], hint: Hint, now: float,
               predicted: float) -> Entry:
        keys = [(b.block_hash, b.block_hash_num_tokens or (i + 1) * self.block_size)
                for i, b in enumerate(blocks)]
        e = Entry(hint, keys, list(request.block_hashes[:len(blocks)]), [], now,
                  due=now + predicted - self.settings.lead_s,
                  expires=now + predicted + self.settings.hold_s)
        e.returns = now + predicted
        return e

    def _offload(self, e: Entry, blocks: list[Any], taken: bool = False) -> bool:
        """Copy ``blocks`` (held already if ``taken``) to the host tier in the next step's
        metadata; False (holds unchanged) if the host tier has no room."""
        if len(blocks) > len(self.free_slots):
            self.ledger.add("offload_skipped")
            return False
        e.slots = self._alloc(len(blocks))
        if not taken:
            compat.hold(self.pool, blocks)
        self.to_host += [(b.block_id, s) for b, s in zip(blocks, e.slots, strict=False)]
        self.ledger.add("offload_bytes", len(blocks) * self.block_bytes)
        e.held, e.state, e.step = blocks, "saving", self.step + 1
        return True

    # ---- host slots: a job gets consecutive slots when it can (one copy run per layer) ----
    def _alloc(self, n: int) -> list[int]:
        f, start = self.free_slots, 0
        for i in range(1, len(f) + 1):
            if i - start == n:
                break
            if i < len(f) and f[i] != f[i - 1] + 1:
                start = i
        else:
            start = 0  # fragmented: the lowest free slots
        out = f[start:start + n]
        self.free_slots = f[:start] + f[start + n:]
        return out

    def _free(self, slots: list[int]) -> None:
        self.free_slots = list(heapq.merge(self.free_slots, sorted(slots)))

    # ---- every step: finish offloads, start/land prefetches, expire, re-decide ----
    def on_tick(self, now: float) -> None:
        """Several transitions may happen in one tick (saved -> re-decided -> prefetched)."""
        self.step += 1
        for job, e in list(self.entries.items()):
            if e.expires <= now and not e.back:
                self._drop(job)
                self.ledger.add("pins_expired")
                continue
            if e.state == "saving" and e.step < self.step:
                self._release(e)
                e.state = "host"
            if e.state == "inflight" and e.step < self.step and e.ready <= now:
                self._land(e)
            if e.recheck <= now and e.state in ("kept", "host", "vram"):
                self.recheck(job, e, now)
                if job not in self.entries:
                    continue
            if e.state == "host" and e.due <= now:
                self._prefetch(e, now)  # lands at a later tick (after its copy's step)
        self._sync()

    def recheck(self, job: str, e: Entry, now: float) -> None:
        """The job is still out at ``e.recheck``; this policy never sets one."""

    def _prefetch(self, e: Entry, now: float) -> None:
        present = [compat.cached_block(self.pool, k) for k, _ in e.keys]
        missing = [i for i, b in enumerate(present) if b is None]
        kept = [b for b in present if b is not None]
        compat.hold(self.pool, kept)
        if len(missing) > self.pool.get_num_free_blocks():
            compat.release(self.pool, kept)
            return  # no room now; retried next step
        self.ledger.add("prefetch_cached_blocks", len(kept))
        if not missing:  # everything still in the prefix cache: held again, nothing to copy
            e.held, e.state = kept, "vram"
            return
        new = self.pool.get_new_blocks(len(missing))
        self.to_dev += [(e.slots[i], b.block_id) for i, b in zip(missing, new, strict=False)]
        e.fresh = [(e.keys[i][0], e.keys[i][1], b) for i, b in zip(missing, new, strict=False)]
        e.held, e.state, e.step = kept + new, "inflight", self.step
        e.read = e.copied = True
        nbytes = len(missing) * self.block_bytes
        link = self.settings.link_gb_s
        e.ready = now + (nbytes / (link * 1e9) if link > 0 else 0.0)
        self.ledger.add("prefetch_bytes", nbytes)

    def _land(self, e: Entry) -> None:
        for key, ntok, block in e.fresh:
            compat.publish(self.pool, key, block, ntok)
        e.fresh, e.state = [], "vram"

    # ---- next turn ----
    def on_lookup(self, request: Any, num_local: int, hint: Hint | None) -> int:
        self.local[request.request_id] = num_local
        e = self.entries.get(hint.job_id) if hint else None
        if e is None or e.state in ("vram", "saving", "kept"):
            return 0
        if e.state == "inflight":  # arrived before the transfer landed: cancel it
            self._unhold(e)
        e.due = e.recheck = math.inf  # the turn is here: no prefetch, no re-decision
        if not e.late:
            e.late = True
            self.ledger.add("prefetch_late")
        return self._plan_late_load(request, num_local, e)

    def _plan_late_load(self, request: Any, num_local: int, e: Entry) -> int:
        if not self.settings.late_load:
            return 0
        m = 0
        for a, b in zip(request.block_hashes, e.plain, strict=False):
            if a != b:
                break
            m += 1
        m = min(m, (request.num_tokens - 1) // self.block_size)
        start = num_local // self.block_size
        if m <= start:
            return 0
        self.loads[request.request_id] = start
        return (m - start) * self.block_size

    def on_admit(self, request: Any, block_ids: list[int], num_external: int,
                 hint: Hint) -> None:
        e = self.entries.get(hint.job_id)
        start = self.loads.pop(request.request_id, None)
        if e is not None and num_external > 0 and start is not None:
            idx = range(start, start + num_external // self.block_size)
            self.to_dev_now += [(e.slots[i], block_ids[i]) for i in idx]
            self.ledger.add("late_load_bytes", len(idx) * self.block_bytes)
            e.read = True
        state = e.state if e else None
        if e is not None:
            if e.state == "vram" and not e.late:
                self.ledger.add("prefetch_hits")
            if e.state == "kept":
                self.ledger.add("pins_released_next_turn")
            self._drop(hint.job_id, taken=True)
        self.ledger.admit(job=hint.job_id, turn=hint.turn, prompt_tokens=request.num_tokens,
                          local_tokens=self.local.pop(request.request_id, 0),
                          host_tokens=num_external, state_at_arrival=state)
        self._sync()

    # ---- holds ----
    def _release(self, e: Entry) -> None:
        if e.held:
            compat.release(self.pool, e.held)
        e.held = []

    def _unhold(self, e: Entry) -> None:
        """Back to the host copy alone (a prefetch cancelled, released or re-timed)."""
        self._release(e)
        if e.copied:
            self.ledger.add("wasted_prefetches")
        e.fresh, e.state, e.copied = [], "host", False

    def _drop(self, job: str, taken: bool = False) -> None:
        """Forget the job's KV (``taken``: its next turn has it)."""
        e = self.entries.pop(job, None)
        if e is None:
            return
        self._release(e)
        self._free(e.slots)
        if e.slots and not e.read:
            self.ledger.add("offloads_unread")
        if e.copied and not taken:
            self.ledger.add("wasted_prefetches")

    def _victims(self, spare_job: str | None) -> Iterator[str]:
        """Jobs whose VRAM holds may go, in the order they go: here the oldest first."""
        return (j for j, e in self.entries.items()
                if j != spare_job and e.state in HELD and e.held)

    def held_blocks(self, job: str) -> int:
        e = self.entries.get(job)
        return len(e.held) if e is not None and e.state in ("kept", "vram") else 0

    def yield_one(self, spare_job: str | None) -> bool:
        job = next(self._victims(spare_job), None)
        if job is None:
            return False
        e = self.entries[job]
        if e.state == "kept":  # no host copy: the blocks stay cached, evictable
            self._drop(job)
        else:
            self._unhold(e)
            e.due = e.recheck = math.inf
        self.ledger.add("pins_released_pressure")
        return True

    def has_timed_work(self) -> bool:
        return bool(self.entries)

    def drop_all(self) -> None:
        for job in list(self.entries):
            self._drop(job)
        self._sync()

    def _sync(self) -> None:
        self.ledger.dirty = True
        now, g = time.time(), self.ledger.gauges
        g["pins_active"] = sum(e.state in HELD for e in self.entries.values())
        g["pinned_blocks"] = sum(len(e.held) for e in self.entries.values())
        g["host_tier_jobs"] = sum(bool(e.slots) for e in self.entries.values())
        g["host_tier_blocks"] = self.n_host - len(self.free_slots)
        self.ledger.jobs = {
            j: {"state": e.state, "turn": e.hint.turn, "vram_blocks_held": len(e.held),
                "host_blocks": len(e.slots), "due_in_s": _until(e.due, now),
                "recheck_in_s": _until(e.recheck, now)}
            for j, e in self.entries.items()
        }
        self.ledger.info["prediction"] = {"predictor": self.settings.predictor,
                                          **gaps.summaries(self.ledger.tools)}


def _until(t: float, now: float) -> float | None:
    return round(t - now, 3) if math.isfinite(t) else None
