"""What the connectors measure on the running server (``harness.plugins.rates``) and how the
stats ledger ships per-tool counters, without a server."""

from __future__ import annotations

import pytest

from harness.plugins.rates import MIN_STEP_TOKENS, Rates
from harness.plugins.stats import WORKER_COUNTERS, Ledger, PolicyStats


def test_prefill_rate_is_the_median_of_busy_prefill_steps():
    r = Rates()
    assert r.prefill_tok_s() is None
    r.step(0.0, 2048)
    r.step(0.1, 1)  # 2,048 tokens in 0.1 s: 20,480 tokens/s
    r.step(0.2, 1)  # a decode step: too few tokens to say anything about prefill
    r.step(0.3, 4096)
    r.step(0.5, 0)  # followed by an idle step: not counted
    r.step(9.0, 1024)  # the engine slept 8.5 s in between
    r.step(9.1, 8)  # 1,024 / 0.1 s
    r.step(9.2, 2048)
    r.step(9.3, 1)  # 20,480
    assert r.prefill_tok_s() == pytest.approx(20480.0)  # median of 20,480, 10,240, 20,480
    assert MIN_STEP_TOKENS == 256


def test_bandwidth_is_bytes_over_seconds_of_the_timed_copies():
    r = Rates()
    assert r.transfer_gb_s() is None
    r.copied(4e9, 0.1)
    r.copied(0, 0)  # a step without copies
    r.copied(2e9, 0.2)
    assert r.transfer_gb_s() == pytest.approx(20.0)
    assert r.state()["transfer_gb_s"] == 20.0 and r.state()["copied_bytes"] == 6e9


def test_per_tool_counters_leave_as_deltas_and_add_up_across_workers():
    led = Ledger("predictive_prefetch", {})
    assert not set(WORKER_COUNTERS) & set(led.totals)  # the workers count those
    led.add_tool("grep", {"predictions": 1.0, "prediction_under_seconds": 0.5})
    first = led.take_delta()
    assert first is not None and first.data["tools"] == {
        "grep": {"predictions": 1.0, "prediction_under_seconds": 0.5}}
    led.add_tool("grep", {"predictions": 1.0})
    led.add_tool("", {"returns_before_prediction": 1.0})
    second = led.take_delta()
    assert second is not None and second.data["tools"] == {
        "grep": {"predictions": 1.0}, "": {"returns_before_prediction": 1.0}}
    assert led.take_delta() is None
    both = first.aggregate(second)
    assert both.data["tools"]["grep"] == {"predictions": 2.0, "prediction_under_seconds": 0.5}
    worker = PolicyStats(data={"counters": {"host_copy_bytes": 10}})
    assert not worker.is_empty() and PolicyStats().is_empty()
