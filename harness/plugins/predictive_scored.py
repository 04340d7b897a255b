"""``predictive_scored``: keep, offload or drop each job's KV for its tool call, by cost.

Seam for the policy registry (all a launcher needs)::

    from harness.plugins import predictive_scored
    argv += predictive_scored.server_args(settings)     # --kv-transfer-config {...}
    env.update(predictive_scored.server_env(settings))  # PYTHONPATH, stats dir

``settings`` are the fields of ``PredictiveScoredSettings``
(``harness/policies/predictive_scored.py``): ``predictive_prefetch``'s plus ``transfer_gb_s``
and ``prefill_tok_s``. ``host_tier_gb`` must be given here (the launcher sets it from ``dram``).

Mechanism: ``predictive_prefetch``'s connector (offload, prefetch, late loads, holds that
yield to admission), with three hooks filled:

- :meth:`choose` (a turn ended): ``harness.plugins.scorer`` weighs keep / offload / drop from
  the predicted gap, the context, the bandwidth and prefill rate (settings, else measured:
  ``harness.plugins.rates``), the free share of the KV pool and the tool's share of early
  returns; every decision and its inputs go to the stats snapshot (``decisions``).
- :meth:`recheck` (the predicted return plus ``lead_s`` has passed and the job is still out):
  the same model with the time waited as the remaining gap (``scorer.remaining_gap``); a kept
  job may be offloaded or let go, a prefetched one released back to its host copy and
  re-timed, or dropped.
- :meth:`_victims` (admission needs room): the held job expected back last goes first
  (Belady's rule), not the oldest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from harness.hints import Hint
from harness.plugins import scorer
from harness.plugins.predictive_prefetch import (
    ACTION_COUNTER,
    HELD,
    Entry,
    PredictivePrefetchConnector,
)
from harness.policies.predictive_scored import PredictiveScored as SPEC
from harness.policies.predictive_scored import PredictiveScoredSettings as Settings

logger = logging.getLogger(__name__)

POLICY = SPEC.name
MODULE = SPEC.module
CONNECTOR = SPEC.connector


def server_args(settings: Mapping[str, Any] | None = None) -> list[str]:
    return SPEC.transfer_args(settings)


def server_env(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    return SPEC.transfer_env(settings)


class PredictiveScoredConnector(PredictivePrefetchConnector):
    SPEC = SPEC
    POLICY = POLICY
    settings: Settings

    # ---- a turn ended ----
    def choose(self, blocks: list[Any], hint: Hint, predicted: float) -> str:
        s = self.situation(predicted, len(blocks) * self.block_size, hint.tool,
                           own_blocks=len(blocks), on_host=False,
                           host_room=len(blocks) <= len(self.free_slots))  # fmt: skip
        return self._decide(s, hint, redecision=False)

    def _entry(self, request: Any, blocks: list[Any], hint: Hint, now: float,
               predicted: float) -> Entry:
        e = super()._entry(request, blocks, hint, now, predicted)
        e.recheck = now + predicted + self.settings.lead_s
        return e

    # ---- the job is still out past its prediction ----
    def recheck(self, job: str, e: Entry, now: float) -> None:
        gap = scorer.remaining_gap(now - e.t_end)
        s = self.situation(gap, e.tokens, e.hint.tool, own_blocks=len(e.held),
                           on_host=bool(e.slots),
                           host_room=len(e.keys) <= len(self.free_slots))  # fmt: skip
        action = self._decide(s, e.hint, redecision=True)
        self.ledger.add("redecisions")
        self.ledger.add(ACTION_COUNTER[action])
        e.returns, e.recheck = now + gap, now + gap + self.settings.lead_s
        if action == "drop":
            self._drop(job)
        elif action == "keep":
            if e.state == "host":
                e.due = now  # bring it back now and hold it
        else:  # offload: out of VRAM now, back lead_s before the new return
            if e.state == "kept" and not self._offload(e, e.held, taken=True):
                return  # no room on the host tier after all: still kept
            if e.state == "vram":
                self._unhold(e)
            e.due = now + gap - self.settings.lead_s

    # ---- the model's inputs ----
    def situation(self, gap: float, tokens: int, tool: str, *, own_blocks: int, on_host: bool,
                  host_room: bool) -> scorer.Situation:
        """``own_blocks``: blocks the job itself holds now, counted free (they are the ones
        the decision is about)."""
        free = (self.pool.get_num_free_blocks() + own_blocks) / max(self.num_blocks, 1)
        return scorer.Situation(
            gap_s=gap, tokens=tokens, bytes_per_token=self.block_bytes / self.block_size,
            transfer_gb_s=self.transfer_gb_s(), prefill_tok_s=self.prefill_tok_s(),
            free_frac=min(free, 1.0), pool_tokens=self.num_blocks * self.block_size,
            lead_s=self.settings.lead_s, early_share=self.early_share(tool), on_host=on_host,
            host_room=host_room, late_load=self.settings.late_load)

    def transfer_gb_s(self) -> float:
        s = self.settings
        if s.transfer_gb_s is not None:
            return s.transfer_gb_s
        if s.link_gb_s > 0:  # the emulated link is the link
            return s.link_gb_s
        return self.rates.transfer_gb_s() or scorer.PRIOR_GB_S

    def prefill_tok_s(self) -> float:
        if self.settings.prefill_tok_s is not None:
            return self.settings.prefill_tok_s
        return self.rates.prefill_tok_s() or scorer.PRIOR_TOK_S

    def early_share(self, tool: str) -> float:
        """The tool's share of returns before the predicted time, with one half-early return
        as the prior (0.5 for a tool never seen)."""
        row = self.ledger.tools.get(tool, {})
        early, n = row.get("returns_before_prediction", 0.0), row.get("predictions", 0.0)
        return (early + 0.5) / (n + 1.0)

    def _decide(self, s: scorer.Situation, hint: Hint, redecision: bool) -> str:
        v = scorer.decide(s)
        self.ledger.decide(
            job=hint.job_id, turn=hint.turn, tool=hint.tool, redecision=redecision,
            action=v.action, gap_s=round(s.gap_s, 3), tokens=s.tokens,
            free_frac=round(s.free_frac, 6), early_share=round(s.early_share, 6),
            on_host=s.on_host, host_room=s.host_room, transfer_gb_s=s.transfer_gb_s,
            prefill_tok_s=round(s.prefill_tok_s, 1),
            waste={a: _finite(w) for a, w in v.waste.items()},
            t_x=_finite(v.terms["t_x"], 4), t_r=_finite(v.terms["t_r"], 4))
        return v.action

    # ---- admission needs room: the job expected back last lets go first ----
    def _victims(self, spare_job: str | None) -> Iterator[str]:
        held = [(e.returns, j) for j, e in self.entries.items()
                if j != spare_job and e.state in HELD and e.held]
        return (j for _, j in sorted(held, reverse=True))


def _finite(x: float, digits: int = 1) -> float | None:
    return round(x, digits) if math.isfinite(x) else None
