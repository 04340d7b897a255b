"""continuum_ttl on a real vLLM CPU server with a 56-block (7K-token) KV cache.

An unhinted job on the same server is the plain-vLLM control: the policy ignores it, so it
shows what the same pressure does to a context that is not pinned.
"""

from __future__ import annotations

import time

import plugin_server as serving
import pytest
from plugin_server import Job, churn

from harness.plugins import continuum_ttl

pytestmark = pytest.mark.server
TTL_S = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("continuum_ttl")
    settings = {"ttl_s": TTL_S, "stats_dir": str(tmp / "stats")}
    srv = serving.start(tmp, continuum_ttl.server_args(settings),
                        continuum_ttl.server_env(settings))
    yield srv
    serving.stop(srv)


def stats(server):
    return server.stats(continuum_ttl.POLICY)


def test_pinned_turn_finds_its_context_despite_pressure(server):
    pinned, control = Job(server, "A", seed=1), Job(server, None, seed=2)
    pinned.send(tool_s=1.0)
    control.send()
    assert stats(server)["jobs"]["A"]["state"] == "pinned"
    assert stats(server)["gauges"]["pinned_blocks"] >= 20
    churn(server, 3, seed=100)  # 63 blocks of other traffic through 35 free ones
    a2 = pinned.send(tool_s=1.0, new_tokens=256)
    c2 = control.send(new_tokens=256)
    assert a2["cached"] >= 0.95 * a2["prev_context"], a2
    assert c2["cached"] < 0.5 * c2["prev_context"], c2  # plain vLLM lost it
    pinned.send(last=True, new_tokens=128)
    assert "A" not in stats(server)["jobs"]


def test_pin_expires_after_ttl(server):
    job = Job(server, "B", seed=3)
    job.send(tool_s=1.0)
    t_end = time.monotonic()
    assert stats(server)["gauges"]["pins_active"] == 1
    expired_before = stats(server)["counters"]["pins_expired"]
    while stats(server)["gauges"]["pins_active"] and time.monotonic() - t_end < TTL_S + 5:
        time.sleep(0.2)
    held_s = time.monotonic() - t_end
    assert TTL_S - 0.5 <= held_s <= TTL_S + 2, held_s
    assert stats(server)["counters"]["pins_expired"] == expired_before + 1
    assert "B" not in stats(server)["jobs"]
    churn(server, 3, seed=200)
    b2 = job.send(last=True, new_tokens=256)
    assert b2["cached"] < 0.5 * b2["prev_context"], b2  # no longer protected


def test_pins_yield_to_admission(server):
    jobs = [Job(server, j, seed=s) for j, s in (("D", 4), ("E", 5))]
    for job in jobs:
        job.send(tool_s=30.0)
    assert stats(server)["gauges"]["pinned_blocks"] >= 40  # 15 of 55 blocks left free
    before = stats(server)["counters"]["pins_released_pressure"]
    Job(server, None, seed=6).send(max_tokens=2)  # needs 22 blocks: admitted anyway
    assert stats(server)["counters"]["pins_released_pressure"] > before
    for job in jobs:
        job.send(last=True, new_tokens=64)


def test_no_pin_left_and_metrics_show_the_mechanism(server):
    time.sleep(1.0)
    snap = stats(server)
    assert snap["gauges"]["pins_active"] == 0 and snap["gauges"]["pinned_blocks"] == 0
    assert snap["jobs"] == {}
    m = server.metrics()
    assert m["kvbench:pins_active"] == 0 and m["kvbench:pinned_blocks"] == 0
    assert m["kvbench:pins_created_total"] >= 4
    assert m["kvbench:pins_released_next_turn_total"] >= 1
    assert m["kvbench:pins_expired_total"] >= 1
    assert m["vllm:kv_cache_usage_perc"] == 0.0
