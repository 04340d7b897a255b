"""The KV cache an engine allocated, from its start-up log
(``harness.server.kv_cache_capacity``), recorded per cell (``harness.cell.kv_cache``) beside
the policy's write-through host tier, and the warning when that tier is the smaller
(docs/validation/h200-20261129-seed.md: a 64 GiB LMCache tier under the H200's 109.5 GiB KV
cache held more than VRAM in 0 of 8,400 lookups).

The GPU lines are the lent H200's (``tests/fixtures/server_logs/``, the native_offload
dram=100 start); the CPU engine's are checked on real servers in
tests/analysis/test_report_real_sweep.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline
from harness import cell
from harness.server import Server, kv_cache_capacity
from tests.harness.test_policies import cell_config, run_server_stub

LOGS = Path(__file__).resolve().parents[1] / "fixtures/server_logs"
H200_LOG = LOGS / "h200_native_offload_dram100.log"
CPU_LINES = ("INFO 11-29 19:52:10 [cpu_worker.py:90] Explicitly set (1.0/23.21) GiB for KV cache "
             "on node 0.\nINFO 11-29 19:52:11 [kv_cache_utils.py:2177] CPU KV cache size: "
             "1,048,576 tokens, Maximum concurrency for 32,768 tokens per request: 32.00x\n")


def test_the_h200_log_names_its_kv_cache():
    assert kv_cache_capacity(H200_LOG.read_text()) == {
        "device": "GPU", "tokens": 896_912, "gib": 109.49}


def test_the_cpu_engine_lines():
    assert kv_cache_capacity(CPU_LINES) == {"device": "CPU", "tokens": 1_048_576, "gib": 1.0}


def test_a_log_without_the_line_says_nothing():
    assert kv_cache_capacity("INFO Starting vLLM API server\n") is None
    # the size in tokens without the GiB line: the tokens, GiB unknown
    only = "(EngineCore pid=1) INFO [kv_cache_utils.py:2177] GPU KV cache size: 12,000 tokens\n"
    assert kv_cache_capacity(only) == {"device": "GPU", "tokens": 12_000, "gib": None}


@pytest.mark.parametrize(("policy", "dram", "warned"), [
    ("lmcache", 100, True),           # 100 GiB tier < 109.49 GiB of KV cache
    ("native_offload", 100, True),
    ("lmcache", 200, False),          # a tier larger than VRAM's KV cache
    ("fcfs", 100, False),             # no host tier
])
def test_a_write_through_tier_smaller_than_vram_is_warned(tmp_path, caplog, policy, dram,
                                                           warned):
    """A real server process whose program prints the H200's start-up log (no GPU here)."""
    cfg = cell_config(tmp_path, "cluster=pace", "gpu=a100", f"dram={dram}", f"policy={policy}")
    server = Server(cfg, tmp_path / "cell" / "server.log")
    run_server_stub(server, f"import sys; sys.stdout.write(open({str(H200_LOG)!r}).read())")
    with caplog.at_level(logging.INFO, logger="harness.cell"):
        kv = cell.kv_cache(cfg, server)
    assert kv is not None and kv["tokens"] == 896_912 and kv["gib"] == 109.49
    assert kv.get("write_through_gib") == (None if policy == "fcfs" else float(dram))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(said) == warned, said
    if warned:
        assert f"policy={policy} on the GPU: its write-through host tier ({dram} GiB) is " \
               "smaller than the KV cache (109.5 GiB)" in said[0]


def test_the_report_names_cells_whose_tier_was_smaller():
    valid = pd.DataFrame([
        {"sweep": "s", "gpu": "h200", "dram": 64, "policy": "lmcache", "sched": "fcfs",
         "jps": 10.0, "write_through_gib": 64.0, "kv_cache_gib": 109.49},
        {"sweep": "s", "gpu": "h200", "dram": 200, "policy": "lmcache", "sched": "fcfs",
         "jps": 10.0, "write_through_gib": 200.0, "kv_cache_gib": 109.49},
        {"sweep": "s", "gpu": "h200", "dram": 64, "policy": "fcfs", "sched": "fcfs",
         "jps": 10.0, "write_through_gib": None, "kv_cache_gib": 109.49}])
    (w,) = pipeline._tier_warnings(valid)
    assert w.startswith("host tier smaller than the engine's KV cache in 1 cell(s)")
    assert "(64 < 109.5 GiB)" in w and "200 <" not in w
