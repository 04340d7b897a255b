"""Tool-time predictors the policies share: a registry, and the gap history they learn from.

A predictor answers, when a turn ends, how long until the job's next turn arrives (the tool
call that follows, plus the client's own delays); ``predictive_prefetch`` starts bringing the
KV back ``lead_s`` before that, ``predictive_scored`` also weighs keep / offload / drop with
it. Every predictor learns from ``observe``, which the connector calls with the gap the
server actually saw (turn end to next-turn arrival), keyed by the tool that followed the turn
(``hint.tool``; ``""`` is the one pool of unnamed tools, so nothing needs tool names)::

    @register("name")
    class Mine:
        def __init__(self, settings): ...   # the policy's settings (fixed_s, quantile, ...)
        def predict(self, hint: Hint) -> float: ...
        def observe(self, hint: Hint, gap_s: float) -> None: ...

A registered name is at once an allowed value of the ``predictor`` setting (planning and the
connector read this registry). Standard library only: planning imports it.

- ``oracle``: the true tool time from the hint (``kvb_tool_s``).
- ``fixed``: always ``fixed_s``.
- ``mean``: the running mean of the tool's gaps.
- ``quantile``: the ``quantile`` (nearest rank) of the tool's last ``HISTORY`` gaps.
- ``learned``: an exponentially weighted log-normal fit of the tool's gaps (mean and variance
  of log gap, forgetting at ``learn_rate`` per gap); it predicts that fit's ``quantile``.

``mean``, ``quantile`` and ``learned`` use the tool's own estimate once it has ``min_samples``
gaps, else the one of all tools together once that has ``min_samples``, else ``fixed_s``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any, Protocol

from harness.hints import Hint

HISTORY = 4096  # gaps kept per tool (and for all tools) for quantiles and CDFs
MIN_GAP_S = 1e-3  # gaps are floored here before taking logs


class Predictor(Protocol):
    def predict(self, hint: Hint) -> float:
        """Seconds from the end of this turn until the job's next turn arrives."""

    def observe(self, hint: Hint, gap_s: float) -> None:
        """The gap that followed ``hint``'s turn, once the next turn arrived."""


PREDICTORS: dict[str, Callable[[Any], Predictor]] = {}  # called with the settings


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        PREDICTORS[name] = cls
        return cls

    return deco


def make(name: str, settings: Any) -> Predictor:
    try:
        return PREDICTORS[name](settings)
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}; registered: {sorted(PREDICTORS)}") from None


class GapHistory:
    """The gaps seen after each tool and after all tools together: count and sum of every gap,
    the last ``keep`` values. Shared with continuum_ttl's TTL rules (``ttl_rules``)."""

    ALL = None  # the key of "every tool"

    def __init__(self, keep: int = HISTORY):
        self.keep = keep
        self.sums: dict[str | None, tuple[float, int]] = {}
        self.recent: dict[str | None, deque[float]] = {}

    def add(self, tool: str, gap_s: float) -> None:
        g = max(gap_s, 0.0)
        for key in (tool, self.ALL):
            total, n = self.sums.get(key, (0.0, 0))
            self.sums[key] = (total + g, n + 1)
            self.recent.setdefault(key, deque(maxlen=self.keep)).append(g)

    def count(self, tool: str | None) -> int:
        return self.sums.get(tool, (0.0, 0))[1]

    def mean(self, tool: str | None) -> float | None:
        total, n = self.sums.get(tool, (0.0, 0))
        return total / n if n else None

    def values(self, tool: str | None) -> Sequence[float]:
        return self.recent.get(tool, ())

    def pick(self, tool: str, min_samples: int) -> tuple[str, str | None]:
        """Whose gaps to use, as (source, key): ``("tool", tool)`` once the tool has
        ``min_samples`` gaps (of the last ``keep``), else ``("global", ALL)`` once all tools
        have, else ``("fixed", None)`` (the caller's fixed fall-back)."""
        if len(self.values(tool)) >= min_samples:
            return "tool", tool
        if len(self.values(self.ALL)) >= min_samples:
            return "global", self.ALL
        return "fixed", None

    def tools(self) -> dict[str, tuple[float, int]]:
        return {t: v for t, v in self.sums.items() if t is not None}


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The smallest value with at least a share ``q`` of ``values`` at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@register("oracle")
class Oracle:
    """The true tool time, from the request's hint (``kvb_tool_s``)."""

    def __init__(self, settings: Any):
        self.settings = settings

    def predict(self, hint: Hint) -> float:
        return max(hint.tool_s, 0.0)

    def observe(self, hint: Hint, gap_s: float) -> None:
        return


@register("fixed")
class Fixed(Oracle):
    """Always ``fixed_s``: a fixed lead after every turn end."""

    def predict(self, hint: Hint) -> float:
        return self.settings.fixed_s


class _FromHistory:
    """Predictors over the gap history, with the tool -> all tools -> ``fixed_s`` fall-back."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.history = GapHistory()

    def observe(self, hint: Hint, gap_s: float) -> None:
        self.history.add(hint.tool, gap_s)

    def predict(self, hint: Hint) -> float:
        source, key = self.history.pick(hint.tool, self.settings.min_samples)
        return self.settings.fixed_s if source == "fixed" else self.estimate(key)

    def estimate(self, key: str | None) -> float:
        raise NotImplementedError


@register("mean")
class Mean(_FromHistory):
    """The running mean of every gap seen after the tool."""

    def estimate(self, key: str | None) -> float:
        mean = self.history.mean(key)
        assert mean is not None  # pick() only names keys with gaps
        return mean


@register("quantile")
class Quantile(_FromHistory):
    """The ``quantile`` (nearest rank) of the tool's last ``HISTORY`` gaps."""

    def estimate(self, key: str | None) -> float:
        return nearest_rank(self.history.values(key), self.settings.quantile)


@register("learned")
class Learned:
    """An exponentially weighted log-normal fit, per tool and for all tools, updated online.

    Each gap ``x`` (floored at ``MIN_GAP_S``) updates ``y = log x``'s weighted mean ``m`` and
    variance ``v`` with weight ``a = learn_rate``: ``d = y - m; m += a d;
    v = (1 - a)(v + a d^2)`` (the first gap sets ``m = y, v = 0``). It predicts
    ``exp(m + z sqrt(v))``, ``z`` the standard normal's ``quantile``: the median of the fit at
    0.5. Why this one: tool times are heavy-tailed and tool-specific, so a plain mean is
    dragged by the tail, while in log space one gap 100x too long moves ``m`` by only
    ``a log 100``; the weights forget an old regime after about ``1/a`` gaps (a tool that got
    slower), which the ``quantile`` predictor's fixed window does not; and it costs two numbers
    per tool."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.fits: dict[str | None, tuple[float, float, int]] = {}  # key -> (m, v, n)
        self.z = NormalDist().inv_cdf(settings.quantile)

    def observe(self, hint: Hint, gap_s: float) -> None:
        y, a = math.log(max(gap_s, MIN_GAP_S)), self.settings.learn_rate
        for key in (hint.tool, GapHistory.ALL):
            fit = self.fits.get(key)
            if fit is None:
                self.fits[key] = (y, 0.0, 1)
                continue
            m, v, n = fit
            d = y - m
            self.fits[key] = (m + a * d, (1 - a) * (v + a * d * d), n + 1)

    def predict(self, hint: Hint) -> float:
        for key in (hint.tool, GapHistory.ALL):
            m, v, n = self.fits.get(key, (0.0, 0.0, 0))
            if n >= self.settings.min_samples:
                return math.exp(m + self.z * math.sqrt(v))
        return self.settings.fixed_s
