"""Tool-time predictors for ``predictive_prefetch``: a registry and the ``oracle``.

A predictor answers, when a turn ends, how long the tool call that follows will take; the
policy starts bringing the job's KV back ``lead_s`` before that. Learned predictors (the
seed's phase 4) register the same way and may learn from ``observe``, which the policy calls
with the gap it actually saw (turn end to next-turn arrival)::

    @register("ewma")
    class Ewma:
        def __init__(self, settings: PredictivePrefetchSettings): ...
        def predict(self, hint: Hint) -> float: ...
        def observe(self, hint: Hint, gap_s: float) -> None: ...

A registered name is at once an allowed value of the ``predictor`` setting (planning and the
connector read this registry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from harness.hints import Hint

logger = logging.getLogger(__name__)


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


@register("oracle")
class Oracle:
    """The true tool time, from the request's hint (``kvb_tool_s``)."""

    def __init__(self, settings: Any):
        self.settings = settings

    def predict(self, hint: Hint) -> float:
        return max(hint.tool_s, 0.0)

    def observe(self, hint: Hint, gap_s: float) -> None:
        return
