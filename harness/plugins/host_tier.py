"""Worker side of the policy connectors: the host tier and the block copies to and from it.

One host buffer per KV layer, indexed by host block id, shaped like the layer's paged KV
cache with ``host_blocks`` in the block dimension (pinned when the cache is on a GPU).

Copies go in *runs*: the (device block, host block) pairs of a step are sorted by host block
and cut where host ids stop being consecutive, so a job's offload is one gather on the device
and one contiguous DMA per layer (and K/V half) per run, not one copy per block. The
scheduler gives a job consecutive host slots whenever it can, so a run is usually a whole job.

On CUDA the copies are issued on a side stream and never block the CPU:

- The side stream first waits for the compute stream, so a save sees every KV write of the
  forwards already queued.
- Each step's copies record an event tagged with the scheduler's step number. At the start of
  step ``s`` the compute stream waits (on the GPU, not the CPU) for events tagged ``<= s-2``:
  the scheduler frees offloaded blocks and publishes prefetched ones one step after their
  copy step, so step ``s-1``'s schedule is the first that can hand them out and step ``s``'s
  forward the first that can touch them. A copy thus overlaps at least one full forward.
- Loads a turn needs in the *same* step (a prefetch that came too late and is finished from
  the host tier) are waited for at once, before that step's forward.

On the CPU engine the copies are plain synchronous ``index_select``/``index_copy_`` (memcpy),
through the same run logic.

Every copy is timed (CUDA: a start and an end event on the copy stream, read once the end has
passed; CPU: wall time) and :meth:`HostTier.take_timing` hands the bytes and seconds to the
connector, which reports them (``host_copy_bytes``, ``host_copy_seconds``): the measured
bandwidth ``predictive_scored`` prices transfers with. :meth:`HostTier.calibrate` times one
copy at start, so a number exists before the first offload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

Pairs = Sequence[tuple[int, int]]


def block_dim(t: torch.Tensor, num_blocks: int) -> int:
    for d in (0, 1):
        if t.shape[d] == num_blocks:
            return d
    raise RuntimeError(f"cannot find the block dimension in KV cache shape {tuple(t.shape)}")


def runs(pairs: Pairs, host_is_src: bool) -> list[tuple[int, list[int]]]:
    """Group (src, dst) pairs into runs of consecutive host blocks: [(host0, device ids)]."""
    h, dv = (0, 1) if host_is_src else (1, 0)
    out: list[tuple[int, list[int]]] = []
    last = None
    for p in sorted(pairs, key=lambda p: p[h]):
        if last is not None and p[h] == last + 1:
            out[-1][1].append(p[dv])
        else:
            out.append((p[h], [p[dv]]))
        last = p[h]
    return out


class HostTier:
    def __init__(self, kv_caches: dict[str, torch.Tensor], num_blocks: int):
        self.kv = kv_caches
        self.dim = {n: block_dim(t, num_blocks) for n, t in kv_caches.items()}
        self.host: dict[str, torch.Tensor] = {}
        self.views: list[tuple[torch.Tensor, torch.Tensor]] = []  # (device, host), block dim 0
        first = next(iter(kv_caches.values()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.pending: list[tuple[int, torch.cuda.Event]] = []
        self.copied_blocks = 0
        self.runs = 0
        self.timing = False  # events that can time themselves (bench/host_tier_copy.py)
        self.block_bytes = 0  # bytes of one block over every layer (set by ensure)
        self.timed: list[tuple[torch.cuda.Event, torch.cuda.Event, int]] = []  # CUDA, unread
        self.measured = [0.0, 0.0]  # bytes, seconds of timed copies not yet taken

    def ensure(self, host_blocks: int) -> None:
        if self.host or host_blocks <= 0:
            return
        for n, t in self.kv.items():
            shape = list(t.shape)
            shape[self.dim[n]] = host_blocks
            h = torch.empty(shape, dtype=t.dtype, device="cpu", pin_memory=self.cuda)
            self.host[n] = h
            if self.dim[n] == 0:
                self.views.append((t, h))
            else:  # (2, blocks, ...): K and V halves, each block-major
                self.views += [(t[i], h[i]) for i in range(t.shape[0])]
        self.block_bytes = sum(dv[0].numel() * dv.element_size() for dv, _ in self.views)
        logger.info("host tier: %d blocks x %d layers (%s)", host_blocks, len(self.kv),
                    "pinned, side stream" if self.cuda else "synchronous")

    # ---- one step ----
    def step(self, tag: int, to_host: Pairs, to_dev: Pairs, to_dev_now: Pairs = ()) -> None:
        """Issue a step's copies; on CUDA, order the compute stream after older ones."""
        if self.cuda:
            self._wait_older(tag)
        if self.cuda:
            self._read_timing()
        if not (to_host or to_dev or to_dev_now):
            return
        nbytes = (len(to_host) + len(to_dev) + len(to_dev_now)) * self.block_bytes
        if not self.cuda:
            t0 = time.perf_counter()
            self._copy(to_host, to_dev, to_dev_now)
            self._measure(nbytes, time.perf_counter() - t0)
            return
        assert self.stream is not None  # made in __init__ whenever self.cuda
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            start = torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            self._copy(to_host, to_dev, to_dev_now)
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(self.stream)
        self.timed.append((start, ev, nbytes))
        if to_dev_now:
            main.wait_event(ev)
        else:
            self.pending.append((tag, ev))

    # ---- timing (the measured bandwidth) ----
    def _measure(self, nbytes: int, seconds: float) -> None:
        self.measured[0] += nbytes
        self.measured[1] += seconds

    def _read_timing(self) -> None:
        """Time the CUDA copies whose end event has passed (never waits)."""
        left = []
        for start, end, nbytes in self.timed:
            if end.query():
                self._measure(nbytes, start.elapsed_time(end) / 1e3)
            else:
                left.append((start, end, nbytes))
        self.timed = left[-1024:]

    def take_timing(self) -> tuple[float, float]:
        """Bytes and seconds of the copies timed since the last call."""
        out = (self.measured[0], self.measured[1])
        self.measured = [0.0, 0.0]
        return out

    def calibrate(self, blocks: int = 32) -> None:
        """Time one device->host copy of up to ``blocks`` blocks into the (still unused) host
        tier, after an untimed one that pays the first touch of the buffer."""
        n = min([blocks, *(v.shape[0] for pair in self.views for v in pair)])
        if not self.host or n <= 0:
            return
        idx = self._index(list(range(n)))
        for timed in (False, True):
            if self.cuda:
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            for dv, hv in self.views:
                hv.narrow(0, 0, n).copy_(dv.index_select(0, idx))
            if self.cuda:
                torch.cuda.synchronize(self.device)
            if timed:
                self._measure(n * self.block_bytes, time.perf_counter() - t0)

    def _wait_older(self, tag: int) -> None:
        if not self.pending:
            return
        main = torch.cuda.current_stream(self.device)
        keep = []
        for t, ev in self.pending:
            if t <= tag - 2:
                main.wait_event(ev)
            else:
                keep.append((t, ev))
        self.pending = keep

    def _copy(self, to_host: Pairs, to_dev: Pairs, to_dev_now: Pairs) -> None:
        for h0, ids in runs(to_host, host_is_src=False):
            idx = self._index(ids)
            for dv, hv in self.views:
                hv.narrow(0, h0, len(ids)).copy_(dv.index_select(0, idx), non_blocking=True)
            self._count(ids)
        for h0, ids in runs(list(to_dev) + list(to_dev_now), host_is_src=True):
            idx = self._index(ids)
            for dv, hv in self.views:
                dv.index_copy_(0, idx, hv.narrow(0, h0, len(ids)).to(self.device,
                                                                      non_blocking=True))
            self._count(ids)

    def _index(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long)
        if not self.cuda:
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def _count(self, ids: list[int]) -> None:
        self.copied_blocks += len(ids)
        self.runs += 1
