"""continuum_ttl on a real vLLM CPU server with a 56-block (7K-token) KV cache, as
``sched=program`` runs it: ``--scheduling-policy priority`` plus the pin-first scheduler, and
``--max-num-seqs 1`` so that a long-decoding request makes every other one wait in the queue
(what the ordering and the expiry tests need). That request is stopped by the test, by
closing its connection, once the queue it holds up has been looked at; it is not timed
from a decode rate (7-25 ms per token on 2 shared cores), which made the expiry test flaky.

An unhinted job on the same server is the plain-vLLM control: the policy ignores it, so it
shows what the same pressure does to a context that is not pinned.
"""

from __future__ import annotations

import time

import plugin_server as serving
import pytest
from plugin_server import InBackground, Job, blocker, churn, wait_for

from harness.plugins import continuum_ttl

pytestmark = pytest.mark.server
TTL_S = 10.0
# the ordering tests' request that should run second decodes this many tokens (the first, 4)
LATER_TOKENS = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("continuum_ttl")
    settings = {"ttl_s": TTL_S, "ttl_rule": "fixed", "stats_dir": str(tmp / "stats")}
    args = continuum_ttl.server_args(settings, sched="program") + ["--max-num-seqs", "1"]
    srv = serving.start(tmp, args, continuum_ttl.server_env(settings))
    yield srv
    serving.stop(srv)


def stats(server):
    return server.stats(continuum_ttl.POLICY)


def counter(server, name: str) -> int:
    return stats(server)["counters"][name]


def admission(server, job: str, turn: int) -> dict:
    return next(a for a in stats(server)["admissions"] if a["job"] == job and a["turn"] == turn)


def waiting(server) -> float:
    return server.metrics()["vllm:num_requests_waiting"]


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


def test_a_pinned_job_s_turn_is_served_before_earlier_waiting_work(server):
    """Program FCFS alone would serve U (priority 0, arrived first) before P's turn 2
    (priority 5); P's KV is pinned, so P goes first (Continuum §4.3)."""
    p, u = Job(server, "P", seed=11), Job(server, "U", seed=12)
    p.send(tool_s=1.0, priority=5)
    t_pin = time.monotonic()
    reordered = counter(server, "requests_reordered")
    busy = blocker(server, seed=13)
    assert busy.wait_running(), "the blocker never ran"
    # U, expected second, decodes 64 tokens against P's 4 (its reply came 0.4-0.6 s after P's
    # here), so the replies' order shows the order the engine ran them by far more than the
    # API server's delivery jitter: two 4-token replies once came back 0.35 ms apart, the
    # later-run one first
    u1 = InBackground(u.send, priority=0, last=True, max_tokens=LATER_TOKENS)
    time.sleep(0.3)
    p2 = InBackground(p.send, priority=5, new_tokens=128, last=True)
    assert wait_for(lambda: waiting(server) == 2, 10) and not busy.done(), "no queue formed"
    formed = time.monotonic() - t_pin
    assert formed < TTL_S - 1, f"the queue formed {formed:.1f} s after P's pin: past its TTL"
    busy.stop()
    ru, rp = u1.result(), p2.result()
    # one request runs at a time: finish order = start order
    assert rp["done"] < ru["done"], (formed, stats(server)["admissions"][-3:])
    assert admission(server, "P", 2)["t"] < admission(server, "U", 1)["t"]
    assert admission(server, "P", 2)["was_pinned"] and rp["cached"] >= 0.95 * rp["prev_context"]
    assert counter(server, "requests_reordered") == reordered + 1


def test_without_a_pin_the_priority_order_stands(server):
    """The control: the same queue with an unpinned job 5 -> U (priority 0) first."""
    u, q = Job(server, "U2", seed=14), Job(server, None, seed=15)
    reordered = counter(server, "requests_reordered")
    busy = blocker(server, seed=16)
    assert busy.wait_running(), "the blocker never ran"
    q1 = InBackground(q.send, priority=5, max_tokens=LATER_TOKENS)  # expected second
    time.sleep(0.3)
    u1 = InBackground(u.send, priority=0, last=True)
    assert wait_for(lambda: waiting(server) == 2, 10) and not busy.done(), "no queue formed"
    busy.stop()
    assert u1.result()["done"] < q1.result()["done"]  # priority 0 first, though it came later
    assert counter(server, "requests_reordered") == reordered


def test_pin_expires_after_ttl(server):
    job = Job(server, "B", seed=3)
    job.send(tool_s=1.0)
    t_end = time.monotonic()
    assert stats(server)["gauges"]["pins_active"] == 1
    expired_before = counter(server, "pins_expired")
    while stats(server)["gauges"]["pins_active"] and time.monotonic() - t_end < TTL_S + 5:
        time.sleep(0.2)
    held_s = time.monotonic() - t_end
    assert TTL_S - 0.5 <= held_s <= TTL_S + 2, held_s
    assert counter(server, "pins_expired") == expired_before + 1
    assert "B" not in stats(server)["jobs"]
    churn(server, 3, seed=200)
    b2 = job.send(last=True, new_tokens=256)
    assert b2["cached"] < 0.5 * b2["prev_context"], b2  # no longer protected


def test_expiry_waits_while_the_job_has_a_waiting_turn(server):
    """§5.2: the TTL runs out while H's next turn waits behind a long request; the pin stays
    until that turn is admitted, which then finds its whole context."""
    job = Job(server, "H", seed=21)
    job.send(tool_s=1.0)
    t_end = time.monotonic()
    expired, held = counter(server, "pins_expired"), counter(server, "pins_expiry_held")
    time.sleep(max(0.0, TTL_S - 7.0 - (time.monotonic() - t_end)))
    busy = blocker(server, seed=22)  # runs until stopped: past the TTL
    assert busy.wait_running(), "the blocker never ran"
    h2 = InBackground(job.send, new_tokens=128, last=True)
    assert wait_for(lambda: waiting(server) == 1, 10)
    formed = time.monotonic() - t_end
    assert formed < TTL_S - 1, f"H's turn queued {formed:.1f} s after its pin: past its TTL"
    time.sleep(max(0.0, TTL_S + 1.0 - (time.monotonic() - t_end)))
    assert not busy.done(), "the blocker ended before the TTL: the test proves nothing"
    snap = stats(server)
    assert "H" in snap["jobs"], (formed, snap["jobs"], snap["counters"], snap["admissions"][-2:])
    assert snap["jobs"]["H"]["held"] and snap["jobs"]["H"]["waiting"], snap["jobs"]
    assert snap["counters"]["pins_expired"] == expired
    assert snap["counters"]["pins_expiry_held"] == held + 1
    busy.stop()
    h = h2.result()
    assert admission(server, "H", 2)["was_pinned"] and h["cached"] >= 0.95 * h["prev_context"]
    assert counter(server, "pins_expired") == expired and "H" not in stats(server)["jobs"]


def test_pressure_releases_the_latest_arrived_job_s_pin_first(server):
    early, late = Job(server, "D", seed=4), Job(server, "E", seed=5)
    early.send(tool_s=30.0)
    late.send(tool_s=30.0)
    assert stats(server)["gauges"]["pinned_blocks"] >= 40  # 15 of 55 blocks left free
    before = counter(server, "pins_released_pressure")
    Job(server, None, seed=6).send(max_tokens=2)  # needs 22 blocks: admitted anyway
    # (the snapshot is rewritten at most every 0.2 s while pins are held)
    assert wait_for(lambda: counter(server, "pins_released_pressure") > before, 15)
    assert counter(server, "pins_released_pressure") == before + 1
    assert set(stats(server)["jobs"]) == {"D"}  # E arrived last: its pin went first
    d2 = early.send(last=True, new_tokens=64)
    assert d2["cached"] >= 0.95 * d2["prev_context"], d2
    late.send(last=True, new_tokens=64)


def test_evictable_prefix_hits_count_when_making_room(server):
    """A turn whose own prefix-cache hits sit in the free queue (nothing holds them) takes them
    out of it when admitted, so making room must count them: here D's and E's pins hold 40 of
    55 blocks, C's turn 2 (16 blocks, 10 of them its evictable turn-1 hits) needs 16 free, and
    only 15 are. Counting only the 6 blocks past the hits released no pin, and every request
    waited until the pins' TTL ran out (27 s stalls of the whole engine in predictors_cpu)."""
    d, e = Job(server, "D2", seed=41), Job(server, "E2", seed=42)
    d.send(tool_s=30.0)
    e.send(tool_s=30.0)
    t_pinned = time.monotonic()
    assert stats(server)["gauges"]["pinned_blocks"] >= 40
    before = counter(server, "pins_released_pressure")
    c = Job(server, None, seed=43, first=1280)
    c.send()  # 11 blocks: fits beside the pins
    assert counter(server, "pins_released_pressure") == before
    t0 = time.monotonic()
    c2 = c.send(new_tokens=640)  # 1,924 tokens: 16 blocks
    took = time.monotonic() - t0
    assert took < TTL_S - (t0 - t_pinned) - 2, f"waited {took:.1f} s: for the pins' TTL"
    assert wait_for(lambda: counter(server, "pins_released_pressure") > before, 15)
    assert c2["cached"] >= 1280, c2  # its evictable hits were used, not recomputed
    assert set(stats(server)["jobs"]) <= {"D2"}  # E2 arrived last: its pin went first
    d.send(last=True, new_tokens=64)
    e.send(last=True, new_tokens=64)


def test_the_last_turn_ends_the_pin_and_the_job(server):
    job = Job(server, "L", seed=7)
    job.send(tool_s=1.0)
    created, handed = counter(server, "pins_created"), counter(server, "pins_released_next_turn")
    assert stats(server)["jobs"]["L"]["state"] == "pinned"
    last = job.send(last=True, new_tokens=64)
    assert last["cached"] >= 0.95 * last["prev_context"]
    snap = stats(server)
    assert "L" not in snap["jobs"] and snap["gauges"]["pins_active"] == 0
    assert snap["counters"]["pins_created"] == created  # nothing pinned after the last turn
    assert snap["counters"]["pins_released_next_turn"] == handed + 1


def test_no_pin_left_and_metrics_show_the_mechanism(server):
    time.sleep(1.0)
    snap = stats(server)
    assert snap["gauges"]["pins_active"] == 0 and snap["gauges"]["pinned_blocks"] == 0
    assert snap["jobs"] == {}
    assert snap["info"]["ttl_rule"]["rule"] == "fixed"
    m = server.metrics()
    assert m["kvbench:pins_active"] == 0 and m["kvbench:pinned_blocks"] == 0
    assert m["kvbench:pins_created_total"] >= 7
    assert m["kvbench:pins_released_next_turn_total"] >= 4
    assert m["kvbench:pins_expired_total"] >= 1
    assert m["kvbench:pins_released_pressure_total"] >= 1
    assert m["kvbench:pins_expiry_held_total"] >= 1
    assert m["kvbench:requests_reordered_total"] >= 1
    assert m["vllm:kv_cache_usage_perc"] == 0.0
