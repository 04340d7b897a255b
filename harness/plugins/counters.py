"""The names of what the policy connectors count (``kvbench:<name>_total`` counters and
``kvbench:<name>`` gauges on ``/metrics``), with their help texts: one place, free of vLLM, so
that the connectors (harness/plugins/stats.py) and the analysis (analysis/why.py,
analysis/policy_counters.py) read the same names."""

from __future__ import annotations

PREFIX = "kvbench:"


def counter(name: str) -> str:
    """The Prometheus sample name of counter ``name`` (``kvbench:<name>_total``)."""
    return f"{PREFIX}{name}_total"


def gauge(name: str) -> str:
    return f"{PREFIX}{name}"


COUNTERS = {
    "pins_created": "Pins taken on a job's KV blocks after a non-last turn",
    "pins_released_next_turn": "Pins handed to the job's next turn",
    "pins_expired": "Pins released because their TTL ran out",
    "pins_released_pressure": "Pins released so that waiting work could be admitted",
    "pins_released_job_end": "Pins dropped because their job ended or was aborted",
    "pins_expiry_held": "Pins whose TTL ran out while their job had a waiting turn (kept "
                        "until that turn was admitted)",
    "pins_skipped": "Non-last turns left unpinned because the TTL rule gave 0",
    "requests_reordered": "Waiting turns of pinned jobs scheduled ahead of other waiting work",
    "preempted_first": "Preempted requests scheduled ahead of other waiting work",
    "offload_bytes": "Bytes of KV copied from VRAM to the host tier",
    "prefetch_bytes": "Bytes of KV copied from the host tier back into VRAM ahead of a turn",
    "late_load_bytes": "Bytes of KV loaded from the host tier by a turn that came early",
    "prefetch_cached_blocks": "Blocks a prefetch found still in the prefix cache and held "
                              "again (no copy needed)",
    "prefetch_hits": "Turns that found their prefetched KV in VRAM",
    "prefetch_late": "Turns that arrived before their prefetch had landed",
    "offload_skipped": "Offloads skipped because the host tier was full",
    "kept": "Decisions to keep a job's KV held in VRAM across its tool call",
    "offloaded": "Decisions to offload a job's KV to the host tier (and prefetch it back)",
    "dropped": "Decisions to hold nothing (the next turn recomputes what was evicted)",
    "redecisions": "Decisions taken again because a job was still out past its prediction",
    "wasted_offloads": "Offloads whose job returned before the copy to the host had finished",
    "offloads_unread": "Offloads whose host copy was never read back (no prefetch copy, no "
                       "late load)",
    "wasted_prefetches": "Prefetches that copied KV into VRAM which the next turn did not "
                         "take (released, re-timed, expired or the job ended)",
    "host_copy_bytes": "Bytes the worker copied between VRAM and the host tier (timed)",
    "host_copy_seconds": "Seconds those copies took (bytes / seconds: the measured bandwidth)",
}
# Counted by the workers (their timed host-tier copies), not by the scheduler's ledger: they
# reach /metrics through vLLM's aggregation of the workers' stats, and the scheduler side
# sums them into ``info.rates`` (``copied_bytes``, ``transfer_gb_s``).
WORKER_COUNTERS = ("host_copy_bytes", "host_copy_seconds")
# Per tool (label ``tool``; "" for unnamed tools): how the tool-time predictor did.
TOOL_COUNTERS = {
    "predictions": "Returns whose predicted gap was recorded",
    "prediction_over_seconds": "Sum of (predicted - actual gap) where the prediction was longer",
    "prediction_under_seconds": "Sum of (actual - predicted gap) where the prediction was "
                                "shorter",
    "returns_before_prediction": "Returns that came before the predicted time",
}
GAUGES = {
    "pins_active": "Jobs whose KV is pinned in VRAM now",
    "pinned_blocks": "KV blocks held by the policy in VRAM now",
    "host_tier_jobs": "Jobs whose KV sits in the host tier now",
    "host_tier_blocks": "Blocks used in the host tier now",
}
