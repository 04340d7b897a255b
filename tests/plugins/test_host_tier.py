"""The host tier's block copies (worker side), on CPU tensors: layouts, runs, round trips.

The CUDA branch (side stream, events) runs only on a GPU; the run grouping and the block
arithmetic it relies on are the same code and are checked here.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from harness.plugins.host_tier import HostTier, block_dim, runs

NUM_BLOCKS, HOST_BLOCKS = 24, 16


def _caches(layout: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (2, NUM_BLOCKS, 4, 2, 8) if layout == "kv_first" else (NUM_BLOCKS, 2, 4, 2, 8)
    return {f"layer.{i}": torch.randn(shape, generator=g) for i in range(3)}


def _block(t: torch.Tensor, d: int, i: int) -> torch.Tensor:
    return t.select(d, i)


def test_runs_group_consecutive_host_blocks():
    # (device, host) pairs, host ids out of order with a gap
    pairs = [(7, 3), (5, 1), (6, 2), (9, 8), (4, 0)]
    assert runs(pairs, host_is_src=False) == [(0, [4, 5, 6, 7]), (8, [9])]
    # (host, device) pairs
    assert runs([(11, 2), (10, 1), (13, 4)], host_is_src=True) == [(10, [1, 2]), (13, [4])]
    assert runs([], host_is_src=True) == []


@pytest.mark.parametrize("layout", ["kv_first", "block_first"])
def test_round_trip_through_host_restores_every_block(layout):
    kv = _caches(layout)
    tier = HostTier(kv, NUM_BLOCKS)
    tier.ensure(HOST_BLOCKS)
    d = block_dim(next(iter(kv.values())), NUM_BLOCKS)
    assert d == (1 if layout == "kv_first" else 0)
    rng = random.Random(1)
    dev_ids = rng.sample(range(NUM_BLOCKS), 10)
    host_ids = [0, 1, 2, 3, 9, 10, 11, 5, 6, 15]  # three runs, shuffled below
    pairs = list(zip(dev_ids, host_ids, strict=True))
    rng.shuffle(pairs)
    before = {n: {i: _block(t, d, i).clone() for i in dev_ids} for n, t in kv.items()}

    tier.step(1, to_host=pairs, to_dev=())
    for n in kv:
        for dv, hv in pairs:
            assert torch.equal(_block(tier.host[n], d, hv), before[n][dv])
    assert tier.runs == 4  # 0-3, 5-6, 9-11, 15

    # overwrite the device blocks, then bring them back into *other* device blocks
    targets = [i for i in range(NUM_BLOCKS) if i not in dev_ids][:10]
    for t in kv.values():
        for i in dev_ids + targets:
            _block(t, d, i).fill_(-1.0)
    back = [(hv, tgt) for (dv, hv), tgt in zip(pairs, targets, strict=True)]
    now = back[:3]
    tier.step(2, to_host=(), to_dev=back[3:], to_dev_now=now)
    for n, t in kv.items():
        for (dv, _hv), tgt in zip(pairs, targets, strict=True):
            assert torch.equal(_block(t, d, tgt), before[n][dv]), (n, dv, tgt)
        for i in dev_ids:
            if i not in targets:
                assert bool((_block(t, d, i) == -1.0).all())
    assert tier.copied_blocks == 20


def test_other_blocks_are_left_alone():
    kv = _caches("kv_first")
    snap = {n: t.clone() for n, t in kv.items()}
    tier = HostTier(kv, NUM_BLOCKS)
    tier.ensure(HOST_BLOCKS)
    tier.step(1, to_host=[(3, 0), (4, 1)], to_dev=[])
    tier.step(2, to_host=[], to_dev=[(0, 10), (1, 11)])
    for n, t in kv.items():
        changed = [i for i in range(NUM_BLOCKS) if not torch.equal(t[:, i], snap[n][:, i])]
        assert changed == [10, 11]
        assert torch.equal(t[:, 10], snap[n][:, 3]) and torch.equal(t[:, 11], snap[n][:, 4])


def test_unknown_layout_is_refused():
    with pytest.raises(RuntimeError, match="block dimension"):
        HostTier({"l": torch.zeros(3, 5, 7)}, NUM_BLOCKS)


def test_host_slots_are_consecutive_when_possible():
    pytest.importorskip("vllm")
    from harness.plugins.predictive_prefetch import PredictivePrefetchConnector as C

    me = SimpleNamespace(free_slots=list(range(12)))
    a = C._alloc(me, 4)
    assert a == [0, 1, 2, 3]
    b = C._alloc(me, 3)
    assert b == [4, 5, 6]
    C._free(me, a)  # free: 0-3, 7-11
    assert C._alloc(me, 5) == [7, 8, 9, 10, 11]  # the first run long enough
    assert C._alloc(me, 2) == [0, 1]
    C._free(me, b)  # free: 2-6
    assert me.free_slots == [2, 3, 4, 5, 6]
    me.free_slots = [0, 2, 4, 6]
    assert C._alloc(me, 3) == [0, 2, 4]  # fragmented: lowest free slots
    assert me.free_slots == [6]


def test_copies_are_timed_for_the_measured_bandwidth():
    kv = _caches("block_first")
    tier = HostTier(kv, NUM_BLOCKS)
    tier.ensure(HOST_BLOCKS)
    one = sum(t[0].numel() * t.element_size() for t in kv.values())  # a block, every layer
    assert tier.block_bytes == one
    assert tier.take_timing() == (0.0, 0.0)
    tier.calibrate(blocks=4)  # an untimed copy, then a timed one
    nbytes, seconds = tier.take_timing()
    assert nbytes == 4 * one and seconds > 0 and tier.copied_blocks == 0  # not a real copy
    tier.step(1, to_host=[(3, 0), (4, 1)], to_dev=[(5, 2)])
    nbytes, seconds = tier.take_timing()
    assert nbytes == 3 * one and seconds > 0
    assert tier.take_timing() == (0.0, 0.0)  # taken once
