"""Keep, offload or drop a job's KV for its tool call: ``predictive_scored``'s cost model.

Pure (standard library, no vLLM): the connector fills a :class:`Situation` from what the
server measures and applies the :class:`Verdict`; docs/policies/predictive_scored.md has the
same model with the reasoning and where each number comes from.

Each action is priced as **waste in token-seconds of VRAM**: KV held that does no work,
times how long; a stall of the engine idles the memory of everything it stalls. This is
InferCept's min-waste rule (ICML 2024, §4: preserve / swap / discard priced as wasted
memory x time), with two changes taken from Continuum's TTL model (arXiv 2511.02230,
§4.1-4.2: the cost of holding is weighed against the chance of a return and the reload cost):
held memory costs in proportion to the memory pressure, and the risk of a return before the
prediction is priced from the predictor's own record.

Terms (``C`` context tokens, ``g`` predicted seconds until the job returns)::

    p      = 1 - free_frac                 pressure: share of the KV pool other work holds
    busy   = p * pool_tokens               tokens that an engine stall idles besides the job's
    t_x    = C * bytes_per_token / bw      one host<->VRAM copy of the context (s)
    t_r    = C / prefill_tok_s             recomputing the context (s)
    stall(t) = t * (C + busy)              a synchronous stall of t seconds

    keep    = p * C * g
    offload = p * C * min(g, t_out + max(lead, t_x)) + early * stall(t_late)
    drop    = stall(t_r)

``t_out`` is ``t_x`` (0 when a host copy exists already: a re-decision after a prefetch):
the blocks stay held while they are copied out, and again from the prefetch's start (``lead``
before the predicted return, or ``t_x`` if the copy takes longer) until the turn comes.
``early`` is the share of this tool's returns that came before the predicted time
(``gaps.summary``); such a turn loads its KV synchronously from the host tier (``t_late =
t_x``; with ``late_load`` off it recomputes: ``t_r``). Offload is impossible when the host
tier has no room and holds no copy. Ties go to keep, then offload, then drop.

What the model says: with no pressure keeping is free, so a job is kept whatever its gap;
under pressure a short gap (``g <= t_out + max(lead, t_x)``) is kept, a longer one offloaded
when the link is fast (``t_x`` small next to ``g``), and dropped when recomputing is cheaper
than holding (``t_r (C + busy) < p C g``, i.e. ``g > (C / p + pool_tokens) / prefill_tok_s``)
and than offloading (a slow link, a full host tier, or many early returns).

Re-decision: when the predicted return has passed (plus ``lead``) and the job is still out,
the connector asks again with ``g = remaining_gap(elapsed)``: the time already waited (the
Lindy rule of heavy-tailed waits: having waited ``e``, expect about ``e`` more), so a job that
stays out is re-examined at geometrically spaced times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ACTIONS = ("keep", "offload", "drop")  # also the tie-break order
# Used until the server has measured its own (the connector's ``rates``): PCIe 4.0 x16 as it
# is reached in practice, and a prefill rate between the CPU engine's tiny model (~38K
# tokens/s) and an 8B model on an H100 (~35K tokens/s), rounded down.
PRIOR_GB_S = 16.0
PRIOR_TOK_S = 20_000.0


@dataclass(frozen=True)
class Situation:
    gap_s: float  # predicted seconds until the job's next turn arrives
    tokens: int  # context tokens the job's KV holds
    bytes_per_token: float
    transfer_gb_s: float  # host<->VRAM bandwidth, each way (GB/s)
    prefill_tok_s: float  # prefill (recompute) rate (tokens/s)
    free_frac: float  # free share of the KV pool, the job's own blocks counted free
    pool_tokens: int  # the KV pool's size (tokens)
    lead_s: float = 0.0  # the prefetch starts this long before the predicted return
    early_share: float = 0.0  # share of this tool's returns before the predicted time
    on_host: bool = False  # a host copy exists already
    host_room: bool = True  # the host tier can take the context
    late_load: bool = True  # an early turn loads from the host tier (else recomputes)


@dataclass(frozen=True)
class Verdict:
    action: str  # keep | offload | drop
    waste: dict[str, float] = field(default_factory=dict)  # token-seconds per action
    terms: dict[str, float] = field(default_factory=dict)  # p, t_x, t_r (for the record)


def terms(s: Situation) -> dict[str, float]:
    p = min(max(1.0 - s.free_frac, 0.0), 1.0)
    bw = s.transfer_gb_s * 1e9
    t_x = s.tokens * s.bytes_per_token / bw if bw > 0 else math.inf
    t_r = s.tokens / s.prefill_tok_s if s.prefill_tok_s > 0 else math.inf
    return {"p": p, "busy": p * s.pool_tokens, "t_x": t_x, "t_r": t_r}


def waste(s: Situation) -> dict[str, float]:
    """Token-seconds of VRAM each action wastes (inf: not possible)."""
    t = terms(s)
    p, c, g = t["p"], float(s.tokens), max(s.gap_s, 0.0)

    def stall(sec: float) -> float:
        return sec * (c + t["busy"]) if sec > 0 else 0.0

    out = {"keep": p * c * g}
    if s.on_host or s.host_room:
        t_out = 0.0 if s.on_host else t["t_x"]
        held = min(g, t_out + max(s.lead_s, t["t_x"]))
        late = t["t_x"] if s.late_load else t["t_r"]
        out["offload"] = p * c * held + s.early_share * stall(late)
    else:
        out["offload"] = math.inf
    out["drop"] = stall(t["t_r"])
    return out


def decide(s: Situation) -> Verdict:
    """The action of least waste (ties: keep, then offload, then drop)."""
    w = waste(s)
    action = min(ACTIONS, key=lambda a: (w[a], ACTIONS.index(a)))
    return Verdict(action, w, terms(s))


def remaining_gap(elapsed_s: float) -> float:
    """The gap to assume for a job still out ``elapsed_s`` after its turn ended."""
    return max(elapsed_s, 0.0)
