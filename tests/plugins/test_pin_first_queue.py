"""The pin-first waiting queue on vLLM's own Request objects, without a server: preempted,
then pinned jobs, then vLLM's priority order; peek and pop agree; jumps are reported."""

from __future__ import annotations

from vllm.sampling_params import SamplingParams
from vllm.v1.request import Request, RequestStatus

from harness.hints import Hint
from harness.plugins.connector import request_hint
from harness.plugins.pin_first import PinFirstQueue


def req(rid: str, job: str | None, priority: int, arrival: float) -> Request:
    extra = Hint(job, 2, False).to_fields() if job is not None else None
    return Request(rid, [1, 2, 3], SamplingParams(max_tokens=1, extra_args=extra), None,
                   arrival_time=arrival, priority=priority)


def job_of(r: Request) -> str | None:
    h = request_hint(r)
    return h.job_id if h else None


def make(*requests: Request) -> tuple[PinFirstQueue, list[tuple[str, str]]]:
    jumps: list[tuple[str, str]] = []
    q = PinFirstQueue(job_of, lambda r, why: jumps.append((r.request_id, why)))
    for r in requests:
        q.add_request(r)
    return q, jumps


def drain(q: PinFirstQueue) -> list[str]:
    out = []
    while q:
        peeked = q.peek_request()
        popped = q.pop_request()
        assert popped is peeked
        out.append(popped.request_id)
    return out


def test_without_pins_it_is_vllm_s_priority_order():
    q, jumps = make(req("c", "3", 3, 1.0), req("a", "1", 1, 3.0), req("b", "2", 1, 4.0),
                    req("x", None, 0, 5.0))
    assert [r.request_id for r in q] == ["x", "a", "b", "c"]
    assert drain(q) == ["x", "a", "b", "c"] and jumps == []


def test_a_pinned_job_goes_ahead_of_earlier_ranked_work():
    q, jumps = make(req("u", "0", 0, 1.0), req("p", "5", 5, 2.0), req("v", "1", 1, 3.0),
                    req("q", "7", 7, 0.5))
    q.set_pinned(frozenset({"5", "7"}))
    assert [r.request_id for r in q] == ["p", "q", "u", "v"]  # pinned by priority, then rest
    assert drain(q) == ["p", "q", "u", "v"]
    assert jumps == [("p", "pinned"), ("q", "pinned")]


def test_preempted_goes_first_and_a_pinned_head_is_no_jump():
    late = req("late", "9", 9, 9.0)
    late.status = RequestStatus.PREEMPTED
    q, jumps = make(req("p", "1", 1, 1.0), req("o", "2", 2, 2.0), late)
    q.set_pinned(frozenset({"1"}))
    assert drain(q) == ["late", "p", "o"]
    assert jumps == [("late", "preempted")]  # p was the heap's head anyway


def test_the_pinned_set_is_a_snapshot_and_removal_keeps_the_heap():
    p, u, v = req("p", "5", 5, 2.0), req("u", "0", 0, 1.0), req("v", "1", 1, 3.0)
    q, _ = make(u, p, v)
    q.set_pinned(frozenset({"5"}))
    assert q.peek_request() is p
    q.remove_requests([p])
    assert q.peek_request() is u and len(q) == 2
    q.set_pinned(frozenset())
    q.prepend_request(p)  # a preempted-then-requeued turn is ordered like any other
    assert drain(q) == ["u", "v", "p"]
