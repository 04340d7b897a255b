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

from analysis import pipeline

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/validation/h200-20261129-seed.md"
SWEEP = REPO / "tests/fixtures/h200_seed/20261129_h200_sched"
COLS = ["policy", "sched", "dram", "mean", "p50", "p90", *(f"T{t}" for t in range(1, 9)), "T8/T1",
        "cached", "preemptions", "gb_out", "gb_in", "lag_ms"]


def _num(cell: str) -> float | None:
    """A table figure as printed ('**201.6**', '1,166.7', '15%', '–', 'n/a¹') or None."""
    s = cell.strip().strip("*").replace(",", "").rstrip("%")
    try:
        return float(s)
    except ValueError:
        return None


def doc_rows() -> list[dict]:
    text = DOC.read_text()
    section = text[text.index("## Cells so far"):]
    section = section[: section.index("\n## ", 4)]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| policy") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(COLS), line
        row = dict(zip(COLS, cells, strict=True))
        row["sched"] = row["sched"].split()[0]  # "fcfs (pin-only)" -> fcfs
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def res() -> pipeline.Results:
    return pipeline.compute([SWEEP], pipeline.Options(n_boot=50, seed=1, reference_policy="fcfs"))


KEY = ["policy", "sched", "dram", "jps"]
# Cells kept in the record that did not run (the page names each below its table).
FAILED = {("native_offload", "fcfs", 100, 10.0)}


def _key(row: dict) -> tuple:
    return (row["policy"], row["sched"], int(row["dram"]), 10.0)


def test_the_page_has_a_row_for_every_cell_at_jps_10(res):
    rows = doc_rows()
    at10 = res.cells[(res.cells.jps == 10.0) & res.cells.valid]
    assert len(rows) == len(at10) >= 11
    assert {_key(r) for r in rows} == set(at10[KEY].itertuples(index=False, name=None))
    assert not res.warnings


def test_failed_cells_are_kept_and_named_on_the_page(res):
    bad = res.cells[~res.cells.valid]
    assert set(bad[KEY].itertuples(index=False, name=None)) == FAILED
    text = DOC.read_text()
    for policy, sched, dram, _ in FAILED:
        said = rf"{policy}`, `sched={sched}`, `dram={dram}`, JPS 10 did\s+not\s+start"
        assert re.search(said, text), said


@pytest.mark.parametrize("row", doc_rows(),
                         ids=lambda r: f"{r['policy']}-{r['sched']}-{r['dram']}")
def test_the_analysis_reproduces_the_row(res, row):
    key = _key(row)
    jct = res.jct.set_index(KEY).loc[key]
    why = res.why.set_index(KEY).loc[key]
    cell = res.cells.set_index(KEY).loc[key]
    pt = res.per_turn.set_index(KEY).loc[key].set_index("turn")
    want = {
        "mean": round(jct.mean_jct_s, 1), "p50": round(jct.p50_jct_s, 1),
        "p90": round(jct.p90_jct_s, 1),
        **{f"T{t}": round(pt.loc[t, "mean_latency_s"], 2) for t in range(1, 9)},
        "T8/T1": round(pt.loc[8, "mean_latency_s"] / pt.loc[1, "mean_latency_s"], 2),
        "cached": round(100 * why.cached_frac), "preemptions": round(why.preemptions),
        "lag_ms": round(1000 * cell.lag_p99_s),
    }
    for col, value in want.items():
        assert _num(row[col]) == pytest.approx(value, abs=1e-9), (col, row[col], value)
    for col, field in (("gb_out", "bytes_offload"), ("gb_in", "bytes_onload")):
        printed, measured = _num(row[col]), why[field]
        if printed is None:  # '–' (no offload tier) or 'n/a' (LMCache exports no byte counter)
            assert pd.isna(measured) or measured == 0, (col, measured)
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
    text = DOC.read_text()
    assert re.search(r"52\.78 s against continuum_ttl's 52\.81 s", text)
    assert f"{prefetch:.2f}" == "52.78" and f"{ctl:.2f}" == "52.81"
