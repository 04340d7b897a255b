"""Per-request hints a policy may read (job id, turn, last turn, tool time that follows).

The client calls :func:`extra_body` for every request and passes the result as the
``extra_body`` of ``AsyncOpenAI.completions.create``. Plain vLLM ignores the hints:

- ``vllm_xargs`` lands in ``SamplingParams.extra_args`` (visible to schedulers/connectors),
- ``kv_transfer_params`` lands in ``Request.kv_transfer_params`` (what KV connectors read),
- ``job_id`` / ``is_last_step`` are the top-level fields Continuum's fork reads.

The kvbench policy plugins (``harness.plugins``) read the ``kvb_*`` fields from
``Request.kv_transfer_params`` first, then from ``SamplingParams.extra_args``; a request
without them is treated exactly as plain vLLM would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hint:
    job_id: int
    turn: int
    n_turns: int
    tool_s: float  # true tool time that follows this turn (oracle); 0 after the last turn
    tool: str = ""  # name of the tool that follows (continuum_ttl's running_mean keys on it)

    @property
    def is_last(self) -> bool:
        return self.turn >= self.n_turns


def hint_fields(h: Hint) -> dict[str, Any]:
    return {
        "kvb_job_id": str(h.job_id),
        "kvb_turn": h.turn,
        "kvb_last": int(h.is_last),
        "kvb_tool_s": float(h.tool_s),
        "kvb_tool": h.tool,
    }


def extra_body(h: Hint, *, continuum_fields: bool = False) -> dict[str, Any]:
    """The request fields carrying the hint."""
    fields = hint_fields(h)
    body: dict[str, Any] = {"vllm_xargs": fields, "kv_transfer_params": dict(fields)}
    if continuum_fields:
        body["job_id"] = str(h.job_id)
        body["is_last_step"] = h.is_last
    return body
