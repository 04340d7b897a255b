"""The H200 campaign at the seed's scale (issue 17; docs/validation/h200-20261129-seed.md): the
analysis, run on the campaign's records (tests/fixtures/h200_seed, reduced by
scripts/device/reduce_fixture.py), reproduces every row of the page's main table.

The table is read from the page itself, so a row added with a new lease is checked as soon as
its cells are in the fixture, and a number edited by hand on the page fails here. Each figure is
compared at the precision the page prints it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from analysis import celltable, pipeline
from tests import doctables

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/validation/h200-20261129-seed.md"
SWEEP = REPO / "tests/fixtures/h200_seed/20261129_h200_sched"
HEADING = "## Cells (JPS 3, 6 and 10"
KEY = ["policy", "sched", "dram", "jps"]
# Cells kept in the record that did not run (the page says why, below its table).
FAILED = {("native_offload", "fcfs", 100, 10.0)}


def doc_rows() -> list[dict[str, str]]:
    return doctables.table(DOC, HEADING)


def _key(row: dict) -> tuple:
    return (row["policy"], row["sched"], int(row["dram GB"]), float(row["JPS"]))


@pytest.fixture(scope="module")
def res() -> pipeline.Results:
    return pipeline.compute([SWEEP], pipeline.Options(n_boot=50, seed=1, reference_policy="fcfs"))


def test_the_page_has_a_row_for_every_cell(res):
    rows = doc_rows()
    assert len(rows) == len(res.cells) == 31
    assert {_key(r) for r in rows} == set(res.cells[KEY].itertuples(index=False, name=None))
    # the only warning: lease 4's native_offload cells recorded their KV cache (109.5 GiB),
    # larger than their 64 GiB write-through tier (earlier cells predate server.kv_cache)
    assert len(res.warnings) == 1, res.warnings
    assert res.warnings[0].startswith("host tier smaller than the engine's KV cache in 4 cell(s)")
    for sched in ("fcfs", "program"):
        for jps in (3, 6):
            assert f"policy=native_offload/sched={sched}/jps={jps}" in res.warnings[0]


def test_the_table_is_what_python_m_analysis_cells_prints(res):
    """The page's table is the command's output for the fixture, whole (so the command the
    page names makes it again after the next lease)."""
    printed = "\n".join(doctables.block(DOC.read_text(), HEADING))
    assert printed == celltable.markdown(celltable.frame(res))


def test_failed_cells_are_kept_and_named_on_the_page(res):
    bad = res.cells[~res.cells.valid]
    assert set(bad[KEY].itertuples(index=False, name=None)) == FAILED
    rows = {_key(r): r for r in doc_rows()}
    text = DOC.read_text()
    for key in FAILED:
        assert rows[key]["state"].startswith("failed: ServerStartError"), rows[key]
        assert rows[key]["mean JCT"] == "–"
        policy, sched, dram, _ = key
        said = rf"{policy}`, `sched={sched}`, `dram={dram}`, JPS 10 did\s+not\s+start"
        assert re.search(said, text), said


def _ok_rows() -> list[dict[str, str]]:
    return [r for r in doc_rows() if r["state"] == "ok"]


@pytest.mark.parametrize("row", _ok_rows(),
                         ids=lambda r: f"{r['policy']}-{r['sched']}-{r['dram GB']}-{r['JPS']}")
def test_the_analysis_reproduces_the_row(res, row):
    """Each figure read again from the analysis' own tables (not through analysis.celltable)
    and compared at the precision the page prints it."""
    key = _key(row)
    jct = res.jct.set_index(KEY).loc[key]
    why = res.why.set_index(KEY).loc[key]
    cell = res.cells.set_index(KEY).loc[key]
    pt = res.per_turn.set_index(KEY).loc[key].set_index("turn")
    want = {
        "mean JCT": round(jct.mean_jct_s, 1), "p50": round(jct.p50_jct_s, 1),
        "p90": round(jct.p90_jct_s, 1),
        **{f"T{t}": round(pt.loc[t, "mean_latency_s"], 2) for t in range(1, 9)},
        "Tlast/T1": round(pt.loc[8, "mean_latency_s"] / pt.loc[1, "mean_latency_s"], 2),
        "cached share": round(100 * why.cached_frac), "preemptions": round(why.preemptions),
        "lag p99 ms": round(1000 * cell.lag_p99_s),
    }
    for col, value in want.items():
        assert doctables.num(row[col]) == pytest.approx(value, abs=1e-9), (col, row[col], value)
    for col, field in (("GB to host", "bytes_offload"), ("GB to GPU", "bytes_onload")):
        printed, measured = doctables.num(row[col]), why[field]
        if printed is None:  # '–': fcfs, no offload tier
            assert pd.isna(measured), (col, measured)
        else:
            assert printed == pytest.approx(round(measured / 1e9, 1), abs=1e-9), (col, measured)


def test_the_pages_findings_hold(res):
    m = res.jct.set_index(KEY)["mean_jct_s"]

    def jct(policy: str, sched: str, dram: int = 64) -> float:
        return float(m[(policy, sched, dram, 10.0)])

    fcfs, lmcache = jct("fcfs", "fcfs"), jct("lmcache", "fcfs")
    assert lmcache / fcfs == pytest.approx(1.20, abs=0.01)  # LMCache slower than FCFS at 64 GB
    assert jct("lmcache", "fcfs", 100) > fcfs  # and at 100 GB
    assert jct("lmcache", "program") > jct("fcfs", "program")  # and under program ordering
    assert jct("native_offload", "fcfs") / fcfs < 1.05  # the churning tier changes nothing
    why = res.why.set_index(KEY)
    for sched in ("fcfs", "program"):
        assert why.loc[("native_offload", sched, 64, 10.0), "bytes_onload"] == 0  # none read back
    prefetch, ctl = jct("predictive_prefetch", "program"), jct("continuum_ttl", "program")
    assert abs(prefetch / ctl - 1) < 0.01  # the phase-2 gate: prefetch reaches Continuum's JCT
    assert prefetch < jct("fcfs", "program")  # and beats ordering alone
    # prefetch alone (fcfs order) is level with Continuum's pins alone, far below fcfs
    assert jct("predictive_prefetch", "fcfs") < min(jct("continuum_ttl", "fcfs"), 0.6 * fcfs)
    # lease 3: LMCache slower than FCFS at JPS 3 and 6 too; at JPS 3 nothing beats plain FCFS
    text = DOC.read_text()
    m3 = m.xs(3.0, level="jps")
    assert m3.idxmin() == ("fcfs", "fcfs", 64)
    assert float(m[("lmcache", "fcfs", 64, 3.0)]) / float(m[("fcfs", "fcfs", 64, 3.0)]) > 2.0
    assert float(m[("lmcache", "fcfs", 64, 6.0)]) > float(m[("fcfs", "fcfs", 64, 6.0)])
    assert float(m[("predictive_prefetch", "program", 64, 3.0)]) > float(
        m[("fcfs", "program", 64, 3.0)])  # the offloads no turn needed cost it
    # lease 4: the matrix is whole: 4 policies x 2 orders x JPS 3/6/10 at 64 GB, all ok
    ok = res.cells[res.cells.valid].set_index(KEY)
    for policy in ("fcfs", "native_offload", "lmcache", "predictive_prefetch"):
        for sched in ("fcfs", "program"):
            for jps in (3.0, 6.0, 10.0):
                assert (policy, sched, 64, jps) in ok.index, (policy, sched, jps)
    # LMCache slower than FCFS at every JPS under either order
    for sched in ("fcfs", "program"):
        for jps in (3.0, 6.0, 10.0):
            assert float(m[("lmcache", sched, 64, jps)]) > float(m[("fcfs", sched, 64, jps)])
            # vLLM's own offload reads nothing back at 64 GiB, at any load
            assert why.loc[("native_offload", sched, 64, jps), "bytes_onload"] == 0
    # JPS 6: Continuum's pins with program ordering win; prefetch is the one policy that pays
    # under fcfs order (-49%, reading back hundreds of GB)
    m6 = m.xs(6.0, level="jps")
    assert m6.idxmin() == ("continuum_ttl", "program", 64)
    assert float(m6[("predictive_prefetch", "fcfs", 64)]) < 0.55 * float(m6[("fcfs", "fcfs", 64)])
    assert why.loc[("predictive_prefetch", "fcfs", 64, 6.0), "bytes_onload"] > 500e9
    assert f"{float(m6[('continuum_ttl', 'program', 64)]):.1f}" == "47.3"
    assert "**JPS 6: continuum_ttl · program**, 47.3 s" in text
    assert re.search(r"52\.78 s against continuum_ttl's 52\.81 s", text)
    assert f"{prefetch:.2f}" == "52.78" and f"{ctl:.2f}" == "52.81"


def test_lmcache_read_nothing_back_and_its_log_says_why(res):
    """Every LMCache cell carries LMCache's own account (log_counts.json, from its log lines):
    stored hundreds of GB, retrieved none, never held more than VRAM; the page's figures for
    the JPS-3 fcfs-order cell are the record's."""
    cells = res.cells.set_index(KEY)
    lm = cells.xs("lmcache", level="policy")
    assert len(lm) == 7 and lm["log_counts"].notna().all()
    for counts in lm["log_counts"]:
        assert counts["bytes_stored"] > 600e9 and counts["bytes_onload"] == 0
        assert counts["tokens_retrieved"] == 0 and counts["tokens_to_load"] == 0
        # a write-through tier smaller than VRAM holds a subset of it: never more than VRAM
        assert counts["lookups_above_engine"] == 0
        assert counts["tokens_hit"] < counts["tokens_engine_had"]
    assert lm["log_counts"].map(lambda c: c["lookups"]).sum() == 8400
    c = cells.loc[("lmcache", "fcfs", 64, 3.0), "log_counts"]
    assert (c["lookups"], c["lookups_lost"]) == (1200, 564)
    assert round(c["bytes_stored"] / 1e9) == 914 and round(c["tokens_stored"] / 1e6, 1) == 7.0
    assert round(c["store_s"]) == 31
    assert cells.loc[("lmcache", "fcfs", 100, 10.0), "log_counts"]["lookups_lost"] == 27
    at64 = lm.xs(64, level="dram")["log_counts"]
    assert round(min(c["bytes_stored"] for c in at64) / 1e9) == 679  # program order, JPS 10
    fcfs64 = [c for (s, _), c in at64.items() if s == "fcfs"]
    assert [round(c["bytes_stored"] / 1e9) for c in fcfs64] == [914, 1096, 1162]
    text = " ".join(DOC.read_text().split())
    assert "in **none** of 8,400 lookups in 7 cells did LMCache hold more than VRAM" in text
    assert "564 of 1,200 lookups at JPS 3 (fcfs order) found none" in text
    assert "(27 of 1,200 lookups)" in text and "679-1,162 GB stored per cell at 64 GiB" in text
    why = res.why.set_index(KEY)
    assert why.loc[("lmcache", "fcfs", 64, 3.0), "bytes_offload"] == c["bytes_stored"]
