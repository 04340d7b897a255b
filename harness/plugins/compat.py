"""The few vLLM internals the policy connectors touch, checked once at import.

The connectors use the public KV-connector API (``KVConnectorBase_V1``) plus four block-pool
internals: ``touch`` / ``free_blocks`` / ``get_new_blocks`` and the prefix-cache map
(``cached_block_hash_to_block`` and ``_insert_block_hash``). The pin-first scheduler
(``harness.plugins.pin_first``, loaded with ``--scheduler-cls``) subclasses the v1
``Scheduler`` / ``AsyncScheduler`` and replaces the ``waiting`` attribute its ``__init__``
makes with a ``PriorityRequestQueue`` subclass (:func:`check_scheduler`). Those are not a
stable API, so :func:`check_vllm` refuses any vLLM release not in :data:`SUPPORTED_VLLM` and
any release whose internals lack what we call. ``KVBENCH_PLUGIN_UNTESTED_OK=1`` lets an
unlisted release through when its internals still match (at your own risk).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

SUPPORTED_VLLM = ("0.26.0", "0.32.0")


class UnsupportedVLLM(RuntimeError):
    """The installed vLLM lacks an internal the kvbench policy plugins rely on."""


def _release(version: str) -> str:
    return version.split("+")[0]


def _missing_internals() -> list[str]:
    from vllm.distributed.kv_transfer.kv_connector.v1 import base
    from vllm.v1.core.block_pool import BlockHashToBlockMap, BlockPool

    missing = []
    for name in ("touch", "free_blocks", "get_new_blocks", "get_num_free_blocks",
                 "_insert_block_hash"):
        if not callable(getattr(BlockPool, name, None)):
            missing.append(f"BlockPool.{name}")
    if not callable(getattr(BlockHashToBlockMap, "get_one_block", None)):
        missing.append("BlockHashToBlockMap.get_one_block")
    insert = getattr(BlockPool, "_insert_block_hash", None)
    if insert is not None and "num_tokens" not in inspect.signature(insert).parameters:
        missing.append("BlockPool._insert_block_hash(num_tokens=)")
    for name in ("bind_gpu_block_pool", "has_pending_push_work", "build_prom_metrics",
                 "build_kv_connector_stats", "get_num_new_matched_tokens",
                 "update_state_after_alloc", "build_connector_meta", "request_finished",
                 "on_new_request"):
        if not hasattr(base.KVConnectorBase_V1, name):
            missing.append(f"KVConnectorBase_V1.{name}")
    return missing


# What PinFirstQueue relies on: the queue's methods (its heap is ``_heap``, ordered by
# ``Request.__lt__``: priority, arrival, id) and the abstract interface it must cover.
QUEUE_METHODS = ("add_request", "pop_request", "peek_request", "prepend_request",
                 "prepend_requests", "remove_request", "remove_requests", "__bool__", "__len__",
                 "__iter__")  # fmt: skip


def _missing_scheduler_internals() -> list[str]:
    from vllm.v1.core.sched import async_scheduler, request_queue, scheduler
    from vllm.v1.request import Request, RequestStatus

    missing = []
    queue = getattr(request_queue, "PriorityRequestQueue", None)
    if queue is None:
        return ["request_queue.PriorityRequestQueue"]
    abstract: frozenset[str] = getattr(request_queue.RequestQueue, "__abstractmethods__",
                                       frozenset())
    missing += [f"RequestQueue.{m} (new abstract method)" for m in sorted(abstract)
                if m not in QUEUE_METHODS]
    missing += [f"PriorityRequestQueue.{m}" for m in QUEUE_METHODS if not hasattr(queue, m)]
    if "_heap" not in inspect.getsource(queue.__init__):
        missing.append("PriorityRequestQueue._heap")
    if not hasattr(request_queue.SchedulingPolicy, "PRIORITY"):
        missing.append("SchedulingPolicy.PRIORITY")
    if not hasattr(RequestStatus, "PREEMPTED") or "__lt__" not in vars(Request):
        missing.append("Request.__lt__ / RequestStatus.PREEMPTED")
    init = inspect.getsource(scheduler.Scheduler.__init__)
    if "self.waiting = create_request_queue(" not in init or "self.connector" not in init:
        missing.append("Scheduler.__init__ (self.waiting = create_request_queue, self.connector)")
    if not issubclass(async_scheduler.AsyncScheduler, scheduler.Scheduler):
        missing.append("AsyncScheduler(Scheduler)")
    return missing


def check_scheduler() -> None:
    """Raise :class:`UnsupportedVLLM` if the scheduler internals the pin-first scheduler
    relies on are not there (call after :func:`check_vllm`)."""
    missing = _missing_scheduler_internals()
    if missing:
        raise UnsupportedVLLM(
            f"the pin-first scheduler does not support this vLLM: missing "
            f"{', '.join(missing)}. Supported releases: {', '.join(SUPPORTED_VLLM)}."
        )


def check_vllm() -> str:
    """Return the vLLM version, or raise :class:`UnsupportedVLLM` saying why."""
    try:
        import vllm
    except ImportError as e:  # pragma: no cover - the plugin only loads inside vLLM
        raise UnsupportedVLLM("vLLM is not installed") from e
    version = _release(vllm.__version__)
    missing = _missing_internals()
    if missing:
        raise UnsupportedVLLM(
            f"kvbench policy plugins do not support vLLM {version}: missing "
            f"{', '.join(missing)}. Supported releases: {', '.join(SUPPORTED_VLLM)}."
        )
    if version not in SUPPORTED_VLLM and os.environ.get("KVBENCH_PLUGIN_UNTESTED_OK") != "1":
        raise UnsupportedVLLM(
            f"kvbench policy plugins are tested on vLLM {', '.join(SUPPORTED_VLLM)}, "
            f"not {version}; set KVBENCH_PLUGIN_UNTESTED_OK=1 to try anyway."
        )
    return version


# ---- block-pool helpers (the only place that reaches into vLLM internals) ----

def blocks_by_id(pool: Any, block_ids: Sequence[int]) -> list[Any]:
    return [pool.blocks[i] for i in block_ids]


def hashed(blocks: Sequence[Any]) -> list[Any]:
    """The leading blocks that are in the prefix cache (full, hashed), in order."""
    out = []
    for b in blocks:
        if b.block_hash is None or getattr(b, "is_null", False):
            break
        out.append(b)
    return out


def hold(pool: Any, blocks: Sequence[Any]) -> None:
    """Take one reference on each block (out of the free queue, not evictable)."""
    pool.touch(list(blocks))


def release(pool: Any, blocks: Sequence[Any]) -> None:
    """Drop our reference; tail blocks become eviction candidates first."""
    pool.free_blocks(list(reversed(blocks)))


def cached_block(pool: Any, key: Any) -> Any | None:
    return pool.cached_block_hash_to_block.get_one_block(key)


def publish(pool: Any, key: Any, block: Any, num_tokens: int) -> None:
    """Make ``block`` findable by prefix-cache lookups under ``key``."""
    pool._insert_block_hash(key, block, num_tokens=num_tokens)
