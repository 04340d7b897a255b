"""LMCache's own account of a cell, read from its log lines
(``harness.policies.lmcache.log_counts``): LMCache 0.5.3 exports no counter vLLM's /metrics
serves, so a cell that ends writes what its log slice says into ``log_counts.json``, and the
analysis takes its bytes each way from there.

LMCache needs CUDA, so no LMCache runs here: the log is a real excerpt of the lent H200's
(``tests/fixtures/server_logs/h200_lmcache_excerpt.log``: 14 lines of the lmcache · fcfs ·
JPS 3 cell of docs/validation/h200-20261129-seed.md, colour codes and all), and LMCache
never retrieved anything there, so the retrieve lines are LMCache 0.5.3's own format strings
(cache_engine.py) filled in here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness import finish, records
from harness.cellkey import CellKey
from harness.policies import lmcache
from harness.server import Server
from tests.harness.test_policies import cell_config, run_server_stub

EXCERPT = Path(__file__).resolve().parents[1] / "fixtures/server_logs/h200_lmcache_excerpt.log"
GIB = 1024**3
RETRIEVE = ("(EngineCore pid=896) [2026-11-29 18:54:00,000] LMCache INFO: [req_id=%s] Retrieved %d "
            "out of %d required tokens (from %d total tokens). size: %.4f gb, cost %.4f ms, "
            "throughput: %.4f GB/s; (cache_engine.py:958:lmcache.v1.cache_engine)")
RETRIEVE_LAYERWISE = ("(EngineCore pid=896) [2026-11-29 18:54:00,000] LMCache INFO: [req_id=%s] "
                      "Retrieved %d out of %d out of total %d tokens")


def test_the_h200_excerpt_is_counted_line_by_line():
    c = lmcache.log_counts(EXCERPT.read_text())
    # six lookups: two first turns (nothing anywhere), one turn-2 found in both VRAM (1616) and
    # LMCache (1536, six chunks), three later turns the engine held 1616, 4976, 9648 tokens of
    # and LMCache none: its first chunk was gone
    assert c["lookups"] == 6
    assert c["tokens_looked_up"] == 1600 + 1600 + 3924 + 2644 + 7548 + 11704
    assert c["tokens_engine_had"] == 1616 + 1616 + 4976 + 9648
    assert c["tokens_hit"] == 1536 and c["tokens_to_load"] == 0
    assert c["lookups_lost"] == 3 and c["lookups_below_engine"] == 3
    assert c["lookups_above_engine"] == 0
    assert c["stores"] == 3 and c["tokens_stored"] == 1536 + 1536 + 2304
    assert c["bytes_stored"] == pytest.approx((0.1875 + 0.1875 + 0.2812) * GIB)
    assert c["store_s"] == pytest.approx((9.4722 + 6.1199 + 8.9731) / 1000)
    assert c["evictions"] == 2 and c["eviction_waits"] == 0
    assert c["retrieves"] == 0 and c["bytes_onload"] == 0
    assert c["bytes_offload"] == c["bytes_stored"]


def test_a_lookup_within_a_chunk_of_the_engine_is_not_lost():
    """The chunk is the unit: LMCache cannot hold the engine's last partial chunk."""
    line = ("LMCache INFO: Reqid: r, Total tokens 4000, Inference Engine computed tokens: %d, "
            "LMCache hit tokens: %d, need to load: 0")
    c = lmcache.log_counts("\n".join([line % (255, 0), line % (1616, 1536), line % (2048, 1792),
                                      line % (1024, 2048)]), chunk_size=256)
    assert c["lookups"] == 4 and c["lookups_lost"] == 0 and c["lookups_below_engine"] == 1
    assert c["lookups_above_engine"] == 1


def test_retrieves_in_both_formats():
    text = "\n".join([RETRIEVE % ("a", 512, 512, 2048, 0.0625, 3.5, 17.9),
                      RETRIEVE_LAYERWISE % ("b", 256, 256, 1024),
                      EXCERPT.read_text()])
    c = lmcache.log_counts(text)
    assert c["retrieves"] == 2 and c["tokens_retrieved"] == 768
    assert c["retrieve_s"] == pytest.approx(0.0035)
    per_token = c["bytes_stored"] / c["tokens_stored"]  # the layerwise line gives no size
    assert c["bytes_onload"] == pytest.approx(0.0625 * GIB + 256 * per_token)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-server", "own-server"])
def test_a_cell_that_ends_keeps_lmcaches_counts(tmp_path, shared):
    """A real server process (its program a stand-in that prints the excerpt: LMCache needs a
    GPU) writes its log; the cell's end reads the cell's slice of it into log_counts.json."""
    cfg = cell_config(tmp_path, "gpu=h100", "dram=100", "policy=lmcache")
    cell = tmp_path / "cell"
    workdir = tmp_path / "_server" if shared else cell
    server = Server(cfg, workdir / "server.log")
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    server.log_path.write_text("an earlier cell's line: Reqid: x, Total tokens 9, Inference "
                               "Engine computed tokens: 0, LMCache hit tokens: 0, need to "
                               "load: 0 LMCache\n")
    log_from = server.log_size()  # the cell's slice starts here
    code = f"import sys; sys.stdout.write(open({str(EXCERPT)!r}).read())"
    run_server_stub(server, code)
    cell.mkdir(exist_ok=True)
    finish.keep_server_files(server, workdir, log_from, cell)
    counts = json.loads((cell / records.LOG_COUNTS).read_text())
    assert counts == lmcache.log_counts(EXCERPT.read_text())  # the slice only
    assert counts["lookups"] == 6
    if shared:
        assert (cell / "server.log").read_text() == EXCERPT.read_text()


def test_a_policy_without_log_counts_writes_none(tmp_path):
    cfg = cell_config(tmp_path, "policy=fcfs")
    server = Server(cfg, tmp_path / "cell" / "server.log")
    run_server_stub(server, f"import sys; sys.stdout.write(open({str(EXCERPT)!r}).read())")
    finish.keep_server_files(server, tmp_path / "cell", 0, tmp_path / "cell")
    assert not (tmp_path / "cell" / records.LOG_COUNTS).exists()


def test_the_backfill_script_writes_what_a_cell_would(tmp_path):
    """scripts/device/log_counts.py, for records made before cells wrote log_counts.json."""
    cfg = cell_config(tmp_path, "gpu=h100", "dram=100", "policy=lmcache")
    key = CellKey.from_config(cfg)
    cell = tmp_path / "sweep" / key.rel_dir
    cell.mkdir(parents=True)
    man = records.Manifest(cell=key, config=OmegaConf.to_container(cfg, resolve=True))
    man.write(cell)
    (cell / "server.log").write_text(EXCERPT.read_text())
    script = Path(__file__).resolve().parents[2] / "scripts/device/log_counts.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "sweep")],
                         capture_output=True, text=True, check=True).stdout
    assert "1 cell(s) written" in out
    assert json.loads((cell / records.LOG_COUNTS).read_text()) == lmcache.log_counts(
        EXCERPT.read_text())
