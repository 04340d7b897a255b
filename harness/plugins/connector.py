"""The KV connector both policies build on: hooks, hints, host tier and stats plumbing.

Scheduler side (``KVConnectorRole.SCHEDULER``, in vLLM's engine-core process) the subclass
fills five small hooks:

- ``on_arrival(request, hint)``          a hinted turn entered the waiting queue
- ``on_finish(request, blocks, hint)``   a turn ended; its block objects, leading hashed first
- ``on_lookup(request, num_local, hint)``  a waiting turn is being considered (may return
  external tokens to load from the host tier)
- ``on_admit(request, block_ids, num_external, hint)``  that turn got its blocks
- ``on_tick(now)``                        every engine step (and idle ticks, see below)

and may append copies to ``self.to_host`` / ``self.to_dev`` ((src, dst) block-id pairs);
they ride to the worker in the step's connector metadata. Worker side
(``KVConnectorRole.WORKER``) the connector only copies those blocks between the paged KV
cache and a host buffer (``harness.plugins.host_tier``: async on a side stream on CUDA), in
``start_load_kv`` (called every step, with or without a forward, in 0.26 and 0.32), and
times them: the worker's ``get_kv_connector_stats`` reports the bytes and seconds, which reach
the scheduler side in ``update_connector_output``. With each step's scheduled tokens they
make ``self.rates`` (``harness.plugins.rates``: measured prefill rate and bandwidth, in the
stats snapshot's ``info.rates``).
``self.step`` is the scheduler's step counter (subclasses advance it in ``on_tick``); copies
a forward of the same step reads go to ``self.to_dev_now``.

Idle ticks: vLLM only steps while it has requests. While a policy holds pins or waits to
prefetch, ``has_pending_push_work`` says True so that the engine keeps stepping (empty
steps), and sleeps ``tick_s`` inside it to keep that loop cheap (it is only consulted when
no request is unfinished, so it never slows a busy engine).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from harness.hints import Hint
from harness.plugins import compat
from harness.plugins.host_tier import HostTier
from harness.plugins.rates import Rates
from harness.plugins.stats import Ledger, PolicyPromMetrics, PolicyStats
from harness.policies.plugin_policy import PluginPolicy

logger = logging.getLogger(__name__)
VLLM_VERSION = compat.check_vllm()


def _log_like_vllm() -> None:
    """Inside vLLM's processes, let ``harness.plugins`` log through vLLM's handlers."""
    ours, theirs = logging.getLogger("harness.plugins"), logging.getLogger("vllm")
    if not ours.handlers and not logging.getLogger().handlers and theirs.handlers:
        ours.handlers = list(theirs.handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False


_log_like_vllm()


def request_hint(request: Any) -> Hint | None:
    """The kvbench hint of a request (``kv_transfer_params``, else ``vllm_xargs``), if any.

    A malformed hint is logged and the request treated as unhinted (plain vLLM)."""
    for src in (getattr(request, "kv_transfer_params", None),
                getattr(getattr(request, "sampling_params", None), "extra_args", None)):
        try:
            hint = Hint.from_fields(src)
        except ValueError as e:
            logger.warning("request %s: %s; treated as unhinted",
                           getattr(request, "request_id", "?"), e)
            return None
        if hint is not None:
            return hint
    return None


@dataclass
class CopyMeta(KVConnectorMetadata):
    to_host: list[tuple[int, int]] = field(default_factory=list)  # (device, host)
    to_dev: list[tuple[int, int]] = field(default_factory=list)  # (host, device)
    to_dev_now: list[tuple[int, int]] = field(default_factory=list)  # read by this forward
    step: int = 0  # the scheduler's step number (orders the worker's async copies)


class PolicyConnector(KVConnectorBase_V1):
    """Base of ``ContinuumTTLConnector`` and ``PredictivePrefetchConnector``.

    ``SPEC`` is the policy class (``harness.policies``): its name, and the settings dataclass
    that ``kv_connector_extra_config`` is validated with, the same one planning used."""

    SPEC: ClassVar[type[PluginPolicy]] = PluginPolicy
    POLICY: ClassVar[str] = ""

    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None):
        super().__init__(vllm_config, role, kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        self.settings: Any = self.resolve_settings(extra)
        self.block_size = vllm_config.cache_config.block_size
        self.num_blocks = kv_cache_config.num_blocks
        tensors = getattr(kv_cache_config, "kv_cache_tensors", [])
        self.block_bytes = sum(t.size for t in tensors) // max(self.num_blocks, 1)
        self.pool: Any = None
        self.tier: HostTier | None = None
        self.to_host: list[tuple[int, int]] = []
        self.to_dev: list[tuple[int, int]] = []
        self.to_dev_now: list[tuple[int, int]] = []
        self.step = 0
        self.rates = Rates()
        self.ledger = Ledger(self.POLICY, self.settings.to_dict())
        if role == KVConnectorRole.SCHEDULER:
            logger.info("%s on vLLM %s: %s", self.POLICY, VLLM_VERSION, self.settings)

    @classmethod
    def resolve_settings(cls, raw: dict[str, Any]) -> Any:
        """``kv_connector_extra_config`` as the policy's settings (ConfigError if bad)."""
        return cls.SPEC.parse_settings(raw)

    @property
    def requires_kv_delivery(self) -> bool:
        return False

    # ---- hooks for subclasses (scheduler side) ----
    def on_arrival(self, request: Any, hint: Hint) -> None: ...

    def on_finish(self, request: Any, blocks: list[Any], hint: Hint) -> None: ...

    def on_lookup(self, request: Any, num_local: int, hint: Hint | None) -> int:
        return 0

    def on_admit(self, request: Any, block_ids: list[int], num_external: int,
                 hint: Hint) -> None: ...

    def on_tick(self, now: float) -> None: ...

    def has_timed_work(self) -> bool:
        return False

    def yield_one(self, spare_job: str | None) -> bool:
        """Release one hold of another job to make room; False if none is left."""
        return False

    def drop_all(self) -> None: ...

    # ---- worker side ----
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self.tier = HostTier(kv_caches, self.num_blocks)
        # Allocate the host buffer now, at server start, not at the first offload: on CUDA it
        # is pinned, and pinning a 64 GiB tier inside an engine step stalled every request.
        self.tier.ensure(self.host_blocks())
        if self.host_blocks() > 0:
            self.tier.calibrate()

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, CopyMeta) or self.tier is None:
            return
        self.tier.step(meta.step, meta.to_host, meta.to_dev, meta.to_dev_now)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                      **kwargs: Any) -> None:
        return

    def wait_for_save(self) -> None:
        return

    # ---- scheduler side ----
    def bind_gpu_block_pool(self, gpu_block_pool: Any) -> None:
        self.pool = gpu_block_pool

    def host_blocks(self) -> int:
        return 0

    def on_new_request(self, request: Any) -> None:
        hint = request_hint(request)
        if hint is not None:
            self.on_arrival(request, hint)

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int):
        hint = request_hint(request)
        self._make_room(request, num_computed_tokens, hint)
        return self.on_lookup(request, num_computed_tokens, hint), False

    def _make_room(self, request: Any, num_local: int, hint: Hint | None) -> None:
        """Let go of the policy's holds (other jobs' first) until the request can be admitted.

        What admission takes from the free pool (vLLM's ``allocate_slots``: the whole prompt
        must fit, ``scheduler_reserve_full_isl``): a block for every token not yet computed,
        and also every local prefix-cache hit that sits in the free queue (ref count 0: it is
        counted as free until the request touches it). Only the hits something holds (the
        policy's own hold on this job's KV, ``held_blocks``) cost nothing. Counting only the
        tokens past the hits, as this did before, left a request waiting whose hits were
        evictable blocks while the policy's holds filled the cache: on the CPU engine
        (96 blocks) every request stopped for 27 s, until the holds' time ran out
        (predictors_cpu, predictive_mean, docs/benchmarks/predictors.md)."""
        spare = hint.job_id if hint else None
        held = min(self.held_blocks(spare), num_local // self.block_size) if spare else 0
        need = -(-request.num_tokens // self.block_size) + 1 - held
        while self.pool.get_num_free_blocks() < need and self.yield_one(spare):
            pass

    def held_blocks(self, job: str) -> int:
        """Blocks of ``job``'s KV the policy holds in VRAM now (its next turn's hits)."""
        return 0

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int):
        hint = request_hint(request)
        if hint is not None:
            self.on_admit(request, blocks.get_block_ids()[0], num_external_tokens, hint)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        now = time.time()
        self.rates.step(now, int(getattr(scheduler_output, "total_num_scheduled_tokens", 0)))
        self.on_tick(now)
        self.ledger.info["rates"] = self.rates.state()
        meta = CopyMeta(self.to_host, self.to_dev, self.to_dev_now, self.step)
        self.to_host, self.to_dev, self.to_dev_now = [], [], []
        self.ledger.maybe_write(force=not self.has_timed_work())  # last tick before idling
        return meta

    def request_finished(self, request: Any, block_ids: list[int]):
        hint = request_hint(request)
        if hint is not None:
            blocks = compat.hashed(compat.blocks_by_id(self.pool, block_ids))
            self.on_finish(request, blocks, hint)
            self.ledger.maybe_write(force=True)
        return False, None

    def has_pending_push_work(self) -> bool:
        if self._role != KVConnectorRole.SCHEDULER or not self.has_timed_work():
            return False
        time.sleep(self.settings.tick_s)
        return True

    def get_kv_connector_stats(self) -> PolicyStats | None:
        if self._role == KVConnectorRole.SCHEDULER:
            return self.ledger.take_delta()
        nbytes, seconds = self.tier.take_timing() if self.tier is not None else (0.0, 0.0)
        if not nbytes:
            return None
        return PolicyStats(data={"counters": {"host_copy_bytes": nbytes,
                                              "host_copy_seconds": seconds}})

    def update_connector_output(self, connector_output: Any) -> None:
        """The workers' output of a step (scheduler side): their timed host-tier copies."""
        stats = getattr(connector_output, "kv_connector_stats", None)
        counters = getattr(stats, "data", {}).get("counters", {}) if stats is not None else {}
        self.rates.copied(counters.get("host_copy_bytes", 0), counters.get("host_copy_seconds", 0))

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None):
        return PolicyStats(data=dict(data or {}))

    @classmethod
    def build_prom_metrics(cls, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        return PolicyPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    def reset_cache(self) -> bool | None:
        if self._role == KVConnectorRole.SCHEDULER and self.pool is not None:
            self.drop_all()
            self.ledger.maybe_write(force=True)
        return True
