"""Per-request hints a policy may read: the one definition of their format.

The client builds a :class:`Hint` for every turn and sends :func:`extra_body` as the
``extra_body`` of ``AsyncOpenAI.completions.create``; plain vLLM ignores it:

- ``vllm_xargs`` lands in ``SamplingParams.extra_args`` (visible to schedulers/connectors),
- ``kv_transfer_params`` lands in ``Request.kv_transfer_params`` (what KV connectors read),
- ``job_id`` / ``is_last_step`` are the top-level fields Continuum's fork reads.

The kvbench plugins (``harness.plugins.connector``) parse the ``kvb_*`` fields with
:meth:`Hint.from_fields`, from ``Request.kv_transfer_params`` first, then from
``SamplingParams.extra_args``; a request without them is treated exactly as plain vLLM would.
The Continuum shim (``harness/policies/continuum_site/sitecustomize.py``) reads :data:`TOOL`.

A job id is a string everywhere (what ``kv_transfer_params`` and Continuum's ``job_id``
carry): the client sends ``str(job_id)``, and the plugins key their state on that string.

This module imports only the standard library and runs on Python 3.9 too: the Continuum
shim loads it by file path inside the fork's own interpreter, where ``harness`` is not on the
path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the kvbench fields (in vllm_xargs and kv_transfer_params)
JOB_ID = "kvb_job_id"  # str: the job (conversation) the turn belongs to
TURN = "kvb_turn"  # int: 1-based turn number within the job
LAST = "kvb_last"  # int 0/1: this is the job's last turn
TOOL_S = "kvb_tool_s"  # float: true tool time after this turn (oracle); 0 after the last
TOOL = "kvb_tool"  # str: name of the tool that follows ("" if unknown)
FIELDS = (JOB_ID, TURN, LAST, TOOL_S, TOOL)

# the top-level request fields of the Continuum fork's API
CONTINUUM_JOB_ID = "job_id"  # str
CONTINUUM_LAST = "is_last_step"  # bool
CONTINUUM_TOOL = "this_func_call"  # str: the tool the fork learned (it overwrites it at finish)


@dataclass(frozen=True)
class Hint:
    job_id: str
    turn: int
    last: bool
    tool_s: float = 0.0  # true tool time that follows this turn (oracle); 0 after the last
    tool: str = ""  # the tool that follows (continuum_ttl's fork and paper TTL rules key on it)

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str):
            raise TypeError(f"Hint.job_id must be a str, not {type(self.job_id).__name__}")

    @classmethod
    def for_turn(cls, job_id: str, turn: int, n_turns: int, tool_s: float,
                 tool: str = "") -> Hint:
        """The hint of turn ``turn`` (1-based) of a job of ``n_turns`` turns."""
        return cls(job_id, turn, turn >= n_turns, float(tool_s), tool)

    def to_fields(self) -> dict[str, Any]:
        return {
            JOB_ID: self.job_id,
            TURN: self.turn,
            LAST: int(self.last),
            TOOL_S: float(self.tool_s),
            TOOL: self.tool,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any] | None) -> Hint | None:
        """The hint in ``fields`` (None: no ``kvb_job_id``); a malformed value raises
        ValueError naming the field."""
        if not isinstance(fields, Mapping) or fields.get(JOB_ID) is None:
            return None
        try:
            return cls(
                job_id=str(fields[JOB_ID]),
                turn=int(fields.get(TURN, 0)),
                last=bool(int(fields.get(LAST, 0))),
                tool_s=float(fields.get(TOOL_S, 0.0)),
                tool=str(fields.get(TOOL) or ""),
            )
        except (TypeError, ValueError) as e:
            shown = {k: fields.get(k) for k in FIELDS if k in fields}
            raise ValueError(f"malformed kvbench hint {shown}: {e}") from None


def extra_body(h: Hint, *, continuum_fields: bool = False) -> dict[str, Any]:
    """The request fields carrying the hint."""
    fields = h.to_fields()
    body: dict[str, Any] = {"vllm_xargs": fields, "kv_transfer_params": dict(fields)}
    if continuum_fields:
        body[CONTINUUM_JOB_ID] = h.job_id
        body[CONTINUUM_LAST] = h.last
    return body
