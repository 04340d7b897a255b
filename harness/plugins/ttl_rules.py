"""How long ``continuum_ttl`` pins a job's KV after a turn: a registry of TTL rules.

A rule answers, when a non-last turn ends, how long to keep the job's KV pinned (0: do not
pin), and learns from what the server observes::

    @ttl_rule("name")
    class MyRule:
        def __init__(self, settings: ContinuumTtlSettings): ...
        def ttl(self, hint: Hint, context_tokens: int) -> float: ...
        def observe_gap(self, tool: str, gap_s: float) -> None: ...   # turn end -> next arrival
        def observe_wait(self, wait_s: float) -> None: ...  # queueing of a turn whose pin was gone
        def state(self) -> dict: ...                        # for the JSON stats snapshot

A registered name is at once an allowed value of ``policy.settings.ttl_rule`` (planning and
the connector read this registry). Standard library only: planning imports it.

- ``fixed``: always ``ttl_s``.
- ``fork``: the public Continuum fork (``estimate_with_func.py``, ``ToolCallEstimator``): a
  running mean of the gaps seen after each tool (``kvb_tool``); pin ``ttl_s`` while that mean
  is <= ``ttl_s`` (or unknown), else do not pin.
- ``paper``: the Continuum paper (arXiv 2511.02230, §4.1-4.2): the TTL tau maximising
  ``P(gap <= tau) * (T * eta + reload) - tau`` over the empirical CDF of the tool's gaps
  (the global CDF while the tool has < ``min_samples``; ``ttl_s`` while both have fewer).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from harness.hints import Hint
from harness.plugins.predictors import GapHistory

if TYPE_CHECKING:
    from harness.policies.continuum_ttl import ContinuumTtlSettings

WAIT_WINDOW = 100  # queueing delays averaged for the paper rule's T


class TtlRule(Protocol):
    def ttl(self, hint: Hint, context_tokens: int) -> float:
        """Seconds to pin the KV of the turn that just ended (0: do not pin)."""

    def observe_gap(self, tool: str, gap_s: float) -> None:
        """The gap that followed a turn ending before ``tool``: turn end to next arrival."""

    def observe_wait(self, wait_s: float) -> None:
        """Arrival-to-admission wait of a returning turn that found its pin gone."""

    def state(self) -> dict[str, Any]:
        """What the rule has learned, for the stats snapshot."""


TTL_RULES: dict[str, Callable[[Any], TtlRule]] = {}  # called with the settings


def ttl_rule(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        TTL_RULES[name] = cls
        return cls

    return deco


def make(settings: ContinuumTtlSettings) -> TtlRule:
    try:
        return TTL_RULES[settings.ttl_rule](settings)
    except KeyError:
        raise ValueError(f"unknown TTL rule {settings.ttl_rule!r}; registered: "
                         f"{sorted(TTL_RULES)}") from None


class _Learning:
    """Shared bookkeeping: the gaps per tool (the predictors' ``GapHistory``: counts, sums and
    the last ``predictors.HISTORY`` gaps per tool and for all tools)."""

    def __init__(self, settings: ContinuumTtlSettings):
        self.s = settings
        self.history = GapHistory()

    def observe_gap(self, tool: str, gap_s: float) -> None:
        self.history.add(tool, gap_s)

    def observe_wait(self, wait_s: float) -> None:
        return

    def mean(self, tool: str) -> float | None:
        return self.history.mean(tool)

    def state(self) -> dict[str, Any]:
        return {"rule": self.s.ttl_rule,
                "tools": {t: {"n": n, "mean_s": round(s / n, 4)}
                          for t, (s, n) in self.history.tools().items()}}  # fmt: skip


@ttl_rule("fork")
class ForkTtl(_Learning):
    """``ttl_s`` while the tool's mean gap is <= ``ttl_s`` (or not yet seen), else 0."""

    def ttl(self, hint: Hint, context_tokens: int) -> float:
        mean = self.mean(hint.tool)
        return self.s.ttl_s if mean is None or mean <= self.s.ttl_s else 0.0


def choose_ttl(gaps: Sequence[float], benefit_s: float, cap_s: float) -> tuple[float, float]:
    """The paper's TTL: tau in {0} + the observed gaps (<= ``cap_s``) maximising
    ``F(tau) * benefit_s - tau``, F the empirical CDF of ``gaps``; ties go to the smaller tau.
    Returns ``(tau, F(tau))``; tau 0 means that pinning does not pay."""
    ordered = sorted(max(g, 0.0) for g in gaps)
    if not ordered:
        return 0.0, 0.0
    n = len(ordered)
    best, best_p = 0.0, bisect_right(ordered, 0.0) / n
    best_u = best_p * benefit_s
    for tau in sorted(set(ordered)):
        if tau <= 0.0 or tau > cap_s:
            continue
        p = bisect_right(ordered, tau) / n
        u = p * benefit_s - tau
        if u > best_u:
            best, best_p, best_u = tau, p, u
    return best, best_p


@ttl_rule("paper")
class PaperTtl(_Learning):
    """Continuum §4.1-4.2: maximise P(tool returns within tau) * (T * eta + reload) - tau.

    T is ``queue_delay_s`` or, when that is null, the mean arrival-to-admission wait of the
    last ``WAIT_WINDOW`` returning turns whose pin was gone (0 before any); reload is
    ``reload_s_per_token`` x the turn's context tokens."""

    def __init__(self, settings: ContinuumTtlSettings):
        super().__init__(settings)
        self.waits: deque[float] = deque(maxlen=WAIT_WINDOW)
        self.last: dict[str, Any] = {}

    def observe_wait(self, wait_s: float) -> None:
        self.waits.append(max(wait_s, 0.0))

    def queue_delay(self) -> float:
        if self.s.queue_delay_s is not None:
            return self.s.queue_delay_s
        return sum(self.waits) / len(self.waits) if self.waits else 0.0

    def samples(self, tool: str) -> tuple[Sequence[float] | None, str]:
        """The tool's gaps, else the global ones, else None (fixed), and which it was."""
        source, key = self.history.pick(tool, self.s.min_samples)
        return (None if source == "fixed" else self.history.values(key)), source

    def ttl(self, hint: Hint, context_tokens: int) -> float:
        gaps, source = self.samples(hint.tool)
        benefit = self.queue_delay() * self.s.eta + self.s.reload_s_per_token * context_tokens
        p: float | None = None
        if gaps is None:
            tau = self.s.ttl_s
        else:
            tau, p = choose_ttl(gaps, benefit, self.s.ttl_max_s)
        self.last = {"tool": hint.tool, "source": source, "ttl_s": round(tau, 4),
                     "p_return": p, "benefit_s": round(benefit, 4)}  # fmt: skip
        return tau

    def state(self) -> dict[str, Any]:
        return {**super().state(), "queue_delay_s": round(self.queue_delay(), 4),
                "waits_seen": len(self.waits),
                "gaps_seen": len(self.history.values(GapHistory.ALL)),
                "last": self.last}  # fmt: skip


@ttl_rule("fixed")
class FixedTtl(_Learning):
    def ttl(self, hint: Hint, context_tokens: int) -> float:
        return self.s.ttl_s
