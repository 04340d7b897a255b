"""Continuum's waiting order on mainline vLLM: preempted, then pinned jobs, then program FCFS.

``continuum_ttl`` with ``sched=program`` starts vLLM with ``--scheduling-policy priority``
(the client sends each request with ``priority`` = its job's rank by arrival, so vLLM's
priority heap is program-level FCFS) and ``--scheduler-cls
harness.plugins.pin_first.PinFirstScheduler``. That class is vLLM's own scheduler with one
change: its waiting queue (``Scheduler.waiting``, a :class:`PriorityRequestQueue`) is
replaced after ``__init__`` by a :class:`PinFirstQueue`, whose head is

1. a preempted request, else
2. a request of a job whose KV the connector holds pinned, else
3. the priority heap's head (priority, then arrival, then id: vLLM's ``Request.__lt__``),

each class in heap order (Continuum §4.3; the fork's ``ContinuumRequestQueue.peek_request``).
Which jobs are pinned is read from the connector (``ContinuumTTLConnector.pinned_jobs``) once
at the start of each ``schedule()``, so peek and pop agree within a step even when a pin is
handed off between them. Nothing else of the scheduler changes: budgets, preemption (under
priority: the running request with the largest (priority, arrival), i.e. the latest-arrived
job, as Continuum), KV allocation. ``PinFirstScheduler`` builds itself as an
:class:`AsyncScheduler` subclass when the engine runs async scheduling (the CUDA default),
else as a :class:`Scheduler` subclass (the CPU engine), so one ``--scheduler-cls`` fits both.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import PriorityRequestQueue, SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from harness.errors import ConfigError
from harness.plugins import compat
from harness.plugins.continuum_ttl import ContinuumTTLConnector

logger = logging.getLogger(__name__)
VLLM_VERSION = compat.check_vllm()
compat.check_scheduler()

PREEMPTED, PINNED, OTHER = 0, 1, 2
REASON = {PREEMPTED: "preempted", PINNED: "pinned"}


class PinFirstQueue(PriorityRequestQueue):
    """vLLM's priority heap, read with preempted and pinned jobs' requests first."""

    def __init__(self, job_of: Callable[[Request], str | None],
                 on_reorder: Callable[[Request, str], None]):
        super().__init__()
        self._job_of = job_of
        self._on_reorder = on_reorder
        self._pinned: frozenset[str] = frozenset()
        self._jobs: dict[str, str | None] = {}  # request id -> job id (hints parsed once)

    def set_pinned(self, jobs: frozenset[str]) -> None:
        self._pinned = jobs

    def _class(self, request: Request) -> int:
        if request.status == RequestStatus.PREEMPTED:
            return PREEMPTED
        if self._pinned:
            rid = request.request_id
            if rid not in self._jobs:
                self._jobs[rid] = self._job_of(request)
            if self._jobs[rid] in self._pinned:
                return PINNED
        return OTHER

    def _head(self) -> tuple[Request, int]:
        """The next request and its class (the heap's own head when nothing jumps it)."""
        head = self._heap[0]
        best, rank = head, self._class(head)
        if rank == PREEMPTED:
            return best, rank
        for r in self._heap:
            c = self._class(r)
            if c < rank or (c == rank and r < best):
                best, rank = r, c
        return best, rank

    def peek_request(self) -> Request:
        if not self._heap:
            raise IndexError("peek from empty heap")
        return self._head()[0]

    def pop_request(self) -> Request:
        if not self._heap:
            raise IndexError("pop from empty heap")
        request, rank = self._head()
        if request is self._heap[0]:
            heapq.heappop(self._heap)
        else:
            self._heap.remove(request)
            heapq.heapify(self._heap)
            self._on_reorder(request, REASON[rank])
        self._jobs.pop(request.request_id, None)
        return request

    def remove_request(self, request: Request) -> None:
        super().remove_request(request)
        self._jobs.pop(request.request_id, None)

    def remove_requests(self, requests: Any) -> None:
        requests = requests if isinstance(requests, set) else set(requests)
        super().remove_requests(requests)
        for r in requests:
            self._jobs.pop(r.request_id, None)

    def __iter__(self) -> Iterator[Request]:
        return iter(sorted(self._heap, key=lambda r: (self._class(r), _Key(r))))


class _Key:
    """Orders requests by vLLM's ``Request.__lt__`` inside a sort key."""

    __slots__ = ("r",)

    def __init__(self, r: Request):
        self.r = r

    def __lt__(self, other: _Key) -> bool:
        return self.r < other.r


class PinFirstScheduler(Scheduler):
    """vLLM's scheduler with a :class:`PinFirstQueue` as its waiting queue."""

    def __new__(cls, *args: Any, **kwargs: Any) -> PinFirstScheduler:
        config = kwargs.get("vllm_config", args[0] if args else None)
        if cls is PinFirstScheduler and getattr(
                getattr(config, "scheduler_config", None), "async_scheduling", False):
            cls = AsyncPinFirstScheduler
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connector = getattr(self, "connector", None)
        if not isinstance(connector, ContinuumTTLConnector):
            raise ConfigError(
                f"--scheduler-cls {__name__}.PinFirstScheduler serves pinned jobs first and "
                f"needs the continuum_ttl connector (policy=continuum_ttl), not "
                f"{type(connector).__name__}")
        if self.policy != SchedulingPolicy.PRIORITY:
            raise ConfigError(
                f"--scheduler-cls {__name__}.PinFirstScheduler orders on top of program-level "
                f"priorities: it needs --scheduling-policy priority (sched=program), not "
                f"{self.policy.value}")
        if not isinstance(self.waiting, PriorityRequestQueue) or len(self.waiting):
            raise compat.UnsupportedVLLM(
                f"vLLM {VLLM_VERSION}: Scheduler.waiting is {type(self.waiting).__name__}, not "
                f"an empty PriorityRequestQueue; supported: {', '.join(compat.SUPPORTED_VLLM)}")
        self.pin_connector = connector
        self.pin_queue = PinFirstQueue(connector.job_of, connector.note_reordered)
        self.waiting = self.pin_queue
        logger.info("%s: waiting order preempted > pinned jobs > priority (program FCFS)",
                    type(self).__name__)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.pin_queue.set_pinned(self.pin_connector.pinned_jobs())
        return super().schedule(*args, **kwargs)


class AsyncPinFirstScheduler(PinFirstScheduler, AsyncScheduler):
    """The same under async scheduling (MRO: PinFirstScheduler, AsyncScheduler, Scheduler)."""
