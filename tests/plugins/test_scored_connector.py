"""predictive_scored's connector on a fake block pool and a fake clock, without a server: how
each decision is applied (keep holds, offload copies out, drop holds nothing), what a
re-decision does to a kept and to a prefetched job, which hold lets go under pressure, and
the counters of wasted transfers. The scorer's own numbers are in test_scorer.py; here the
rates are settings and the pool's fill is what the test makes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from vllm.v1.request import RequestStatus

from harness.hints import Hint
from harness.plugins import connector as connector_module
from harness.plugins import gaps, predictors
from harness.plugins import predictive_prefetch as pp
from harness.plugins.predictive_scored import PredictiveScoredConnector
from harness.plugins.rates import Rates
from harness.plugins.stats import Ledger

BLOCK, NUM_BLOCKS = 16, 64


@dataclass(eq=False)
class Block:
    block_id: int
    block_hash: Any = None
    block_hash_num_tokens: int | None = None
    ref: int = 0


@dataclass
class Pool:
    """The few BlockPool calls the connector makes (compat.py), over plain objects."""

    blocks: list[Block] = field(default_factory=lambda: [Block(i) for i in range(NUM_BLOCKS)])
    cache: dict[Any, Block] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cached_block_hash_to_block = SimpleNamespace(get_one_block=self.cache.get)

    def touch(self, blocks):
        for b in blocks:
            b.ref += 1

    def free_blocks(self, blocks):
        for b in blocks:
            b.ref -= 1

    def get_num_free_blocks(self) -> int:
        return sum(b.ref == 0 for b in self.blocks)

    def get_new_blocks(self, n):
        out = [b for b in self.blocks if b.ref == 0 and b.block_hash is None][:n]
        for b in out:
            b.ref = 1
        return out

    def _insert_block_hash(self, key, block, num_tokens):
        block.block_hash, block.block_hash_num_tokens = key, num_tokens
        self.cache[key] = block

    def take(self, job: str, n: int) -> list[int]:
        """A running request's n full, hashed blocks (referenced once)."""
        free = [b for b in self.blocks if b.ref == 0 and b.block_hash is None][:n]
        for i, b in enumerate(free):
            self._insert_block_hash(f"{job}:{i}", b, (i + 1) * BLOCK)
            b.ref = 1
        return [b.block_id for b in free]

    def evict(self, job: str) -> None:
        for key in [k for k in self.cache if k.startswith(f"{job}:")]:
            self.cache.pop(key).block_hash = None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    for module in (pp, connector_module, gaps):
        monkeypatch.setattr(module, "time", c, raising=False)
    return c


def make(**settings) -> PredictiveScoredConnector:
    """The connector as vLLM's scheduler process builds it, minus vLLM's config objects."""
    s = PredictiveScoredConnector.resolve_settings(
        {"host_tier_gb": 40 * BLOCK * 1024 / 2**30, "transfer_gb_s": 0.01,
         "prefill_tok_s": 1000.0, "lead_s": 0.2, **settings})  # fmt: skip
    c = object.__new__(PredictiveScoredConnector)
    c.settings, c.block_size, c.num_blocks, c.block_bytes = s, BLOCK, NUM_BLOCKS, BLOCK * 1024
    c.pool, c.tier, c.step, c.rates = Pool(), None, 0, Rates()
    c.to_host, c.to_dev, c.to_dev_now = [], [], []
    c.ledger = Ledger("predictive_scored", s.to_dict())
    c.predictor = predictors.make(s.predictor, s)
    c.gaps = gaps.GapTracker(c.predictor)
    c.n_host, c.entries, c.local, c.loads = 40, {}, {}, {}
    c.free_slots = list(range(40))
    return c


def request(job: str, turn: int, tool_s: float, block_ids=(), *, arrival: float = 0.0,
            last: bool = False, tool: str = "t"):
    hint = Hint(job, turn, last, tool_s, tool)
    return SimpleNamespace(request_id=f"{job}-{turn}", kv_transfer_params=hint.to_fields(),
                           status=RequestStatus.FINISHED_STOPPED, arrival_time=arrival,
                           num_tokens=len(block_ids) * BLOCK + 1,
                           block_hashes=[f"{job}:{i}" for i in range(len(block_ids))])


def end_turn(c, clock, job: str, tool_s: float, n_blocks: int, turn: int = 1) -> list[int]:
    ids = c.pool.take(job, n_blocks)
    c.on_new_request(request(job, turn, tool_s, arrival=clock.now))
    c.request_finished(request(job, turn, tool_s, ids), ids)
    c.pool.free_blocks([c.pool.blocks[i] for i in ids])  # vLLM frees the request's own refs
    return ids


def tick(c, clock, dt: float = 0.0) -> None:
    clock.now += dt
    c.build_connector_meta(SimpleNamespace(total_num_scheduled_tokens=0))


def decisions(c) -> list[tuple[str, str, bool]]:
    return [(d["job"], d["action"], d["redecision"]) for d in c.ledger.decisions]


def test_keep_holds_the_blocks_offload_copies_them_out_drop_holds_nothing(clock):
    """A (no pressure) is kept; with A's 20 blocks held, B's long gap is offloaded; C finds no
    room left on the 40-block host tier and, with a long gap, is dropped."""
    c = make()
    end_turn(c, clock, "A", 1.0, 20)
    assert c.entries["A"].state == "kept" and len(c.entries["A"].held) == 20
    end_turn(c, clock, "B", 20.0, 30)
    assert c.entries["B"].state == "saving" and len(c.to_host) == 30  # rides in the next step
    end_turn(c, clock, "C", 60.0, 12)
    assert "C" not in c.entries and c.ledger.decisions[-1]["host_room"] is False
    assert decisions(c) == [("A", "keep", False), ("B", "offload", False), ("C", "drop", False)]
    assert [c.ledger.totals[k] for k in ("kept", "offloaded", "dropped")] == [1, 1, 1]
    tick(c, clock)
    tick(c, clock)
    assert c.entries["B"].state == "host" and c.entries["B"].held == []  # copied, let go
    assert c.pool.get_num_free_blocks() == NUM_BLOCKS - 20  # only A's hold is left


def test_a_kept_job_out_past_its_prediction_is_decided_again(clock):
    c = make()
    end_turn(c, clock, "A", 1.0, 20)  # kept (nothing else holds anything)
    tick(c, clock, 1.1)
    assert not c.ledger.decisions[1:]  # 1.1 s < predicted 1 s + lead 0.2 s
    tick(c, clock, 0.2)
    assert decisions(c)[1:] == [("A", "keep", True)]  # still no pressure: keep
    assert c.ledger.decisions[1]["gap_s"] == pytest.approx(1.3)  # the time already waited
    assert c.entries["A"].recheck == pytest.approx(clock.now + 1.3 + 0.2)
    c.pool.take("X", 40)  # other work fills the pool: holding A now costs
    tick(c, clock, 1.6)
    assert decisions(c)[2:] == [("A", "offload", True)]
    assert c.entries["A"].state == "saving" and len(c.entries["A"].slots) == 20
    assert c.ledger.totals["redecisions"] == 2


def test_a_prefetched_job_out_past_its_prediction_is_released_and_re_timed(clock):
    c = make(lead_s=0.5)
    c.pool.take("X", 30)  # pressure from the start
    end_turn(c, clock, "B", 10.0, 20)
    assert c.entries["B"].state == "saving"
    tick(c, clock)
    tick(c, clock)
    c.pool.evict("B")  # other traffic took B's blocks: the prefetch must copy
    tick(c, clock, 9.6)  # due at 9.5 s: prefetched into fresh blocks
    e = c.entries["B"]
    assert e.state == "inflight" and e.copied and c.ledger.totals["prefetch_bytes"] > 0
    tick(c, clock, 1.0)  # landed; 10.6 s > 10 + 0.5: B is late, decided again
    assert decisions(c)[-1] == ("B", "offload", True) and e.state == "host" and not e.held
    assert e.due == pytest.approx(clock.now + 10.6 - 0.5)  # the time waited, again
    assert c.ledger.totals["wasted_prefetches"] == 1  # its copy was never taken


def test_the_job_expected_back_last_lets_go_first_under_pressure(clock):
    c = make(transfer_gb_s=0.0001)  # offloading never pays: both are kept
    end_turn(c, clock, "A", 0.3, 10)
    end_turn(c, clock, "B", 0.2, 10)
    assert {j: e.state for j, e in c.entries.items()} == {"A": "kept", "B": "kept"}
    assert c.yield_one(spare_job=None)  # A comes back later than B: A goes
    assert set(c.entries) == {"B"} and c.ledger.totals["pins_released_pressure"] == 1


def test_an_early_return_while_saving_is_a_wasted_offload_and_its_copy_unread(clock):
    c = make()
    c.pool.take("X", 30)
    end_turn(c, clock, "B", 20.0, 20)
    assert c.entries["B"].state == "saving"
    nxt = request("B", 2, 0.0, arrival=clock.now + 0.01, last=True)
    c.on_new_request(nxt)  # back before the copy's step was over
    assert c.ledger.totals["wasted_offloads"] == 1
    ids = c.pool.take("B2", 10)
    c.update_state_after_alloc(nxt, SimpleNamespace(get_block_ids=lambda: [ids]), 0)
    assert "B" not in c.entries and c.ledger.totals["offloads_unread"] == 1
    errors = gaps.summaries(c.ledger.tools)["tools"]["t"]
    assert errors["n"] == 1 and errors["early_share"] == 1.0 and errors["bias_s"] > 19.9
