"""predictive_prefetch with lead 0: the turn arrives while its KV is still on the host tier.

Same server settings and scenario as ``test_predictive_prefetch.py`` except ``lead_s``; the
next turn must NOT find its context in VRAM (it is loaded late from the host tier instead).
"""

from __future__ import annotations

import plugin_server as serving
import pytest
from plugin_server import tool_gap
from test_predictive_prefetch import SETTINGS, TOOL_S

from harness.plugins import predictive_prefetch as pp

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def gap(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefetch_lead0")
    settings = {**SETTINGS, "lead_s": 0.0, "stats_dir": str(tmp / "stats")}
    srv = serving.start(tmp, pp.server_args(settings), pp.server_env(settings))
    try:
        yield {**tool_gap(srv, pp.POLICY, "A", TOOL_S, seed=11), "snap": srv.stats(pp.POLICY)}
    finally:
        serving.stop(srv)


def test_without_lead_the_next_turn_misses_vram(gap):
    assert gap["churn_s"] < TOOL_S - 1.0, "traffic overran the gap"
    turn2, admission = gap["turn2"], gap["admission"]
    assert admission["local_tokens"] < 0.5 * turn2["prev_context"], admission
    assert admission["state_at_arrival"] in ("host", "inflight")
    assert gap["snap"]["counters"]["prefetch_late"] == 1
    assert gap["snap"]["counters"]["prefetch_hits"] == 0


def test_late_turn_still_gets_its_kv_from_the_host_tier(gap):
    turn2, admission = gap["turn2"], gap["admission"]
    assert admission["host_tokens"] >= 0.9 * turn2["prev_context"], admission
    assert turn2["cached"] >= 0.95 * turn2["prev_context"], turn2  # local + host tokens
    assert gap["snap"]["counters"]["late_load_bytes"] > 0
