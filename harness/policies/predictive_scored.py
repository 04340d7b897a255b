"""``predictive_scored``: for each tool call, keep the job's KV in VRAM, offload it to the host
tier and prefetch it back, or drop it, whichever the cost model (``harness.plugins.scorer``)
says wastes least; decided again when the job stays out past its prediction
(``harness.plugins.predictive_scored``; see docs/policies/predictive_scored.md). Its settings
are ``predictive_prefetch``'s (host tier, lead, predictor) plus the two measured rates the
model prices transfers and recomputation with. Both engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.policies.base import register
from harness.policies.predictive_prefetch import (
    PredictivePrefetch,
    PredictivePrefetchSettings,
    out_of_range,
)
from harness.policies.settings import setting


@dataclass(frozen=True)
class PredictiveScoredSettings(PredictivePrefetchSettings):
    transfer_gb_s: float | None = setting(
        None, "host<->VRAM bandwidth (GB/s) the model prices a copy with; null: link_gb_s if "
        "set, else measured from the host tier's timed copies")
    prefill_tok_s: float | None = setting(
        None, "prefill (recompute) rate (tokens/s) the model prices a dropped context with; "
        "null: measured from the engine's steps")

    def check(self, policy: str) -> None:
        super().check(policy)
        for key in ("transfer_gb_s", "prefill_tok_s"):
            value: Any = getattr(self, key)
            if value is not None and value <= 0:
                out_of_range(policy, key, value, "a positive number, or null (measured)")


@register
class PredictiveScored(PredictivePrefetch):
    name = "predictive_scored"
    connector = "PredictiveScoredConnector"
    module = "harness.plugins.predictive_scored"
    settings_type = PredictiveScoredSettings
