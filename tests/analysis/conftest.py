"""Fixtures of the analysis tests: synthetic sweeps (analysis.synth, docs/records.md) and a
checker of a finished report folder, shared by the synthetic and the real-sweep tests."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from analysis.synth import SynthSpec, build
from harness.cellkey import iter_cell_dirs

FAULTS = {
    ("h100", 64, "fcfs", 3.0): "jobs_failed",
    ("h200", 64, "lmcache", 1.0): "missing",
    ("h200", 400, "fcfs", 6.0): "lag",
    ("h100", 400, "lmcache", 3.0): "unfinished",
    ("h200", 64, "continuum", 3.0): "failed",
    ("h100", 64, "continuum", 6.0): "nodata",
}
EXPECTED_TABLES = ["cells", "jct", "per_turn", "tlast_t1", "winners", "why", "cached_per_turn",
                   "kv_usage", "reference_check", "vs_reference_policy"]


def small_spec(**kw) -> SynthSpec:
    base = dict(gpus=("h200", "h100"), drams=(400, 64), policies=("fcfs", "lmcache", "continuum"),
                jps=(1.0, 3.0, 6.0), n_jobs=12, n_turns=8, seed=42)
    base.update(kw)
    return SynthSpec(**base)


@pytest.fixture(scope="session")
def synth_sweep(tmp_path_factory) -> Path:
    """A 2 GPU x 2 DRAM x 3 policy x 3 JPS sweep with one cell of each fault."""
    return build(small_spec(faults=dict(FAULTS)), tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def clean_sweep(tmp_path_factory) -> Path:
    """One GPU, one DRAM size, no faults: quick to draw."""
    return build(small_spec(name="clean", gpus=("h100",), drams=(400,), jps=(3.0, 6.0)),
                 tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="session")
def tiny_faulty_sweep(tmp_path_factory) -> Path:
    """One GPU, two JPS, a lagging and a missing cell: quick to draw, still has marks."""
    spec = small_spec(name="tiny", gpus=("h100",), drams=(64,), jps=(3.0, 10.0),
                      faults={("h100", 64, "fcfs", 10.0): "lag",
                              ("h100", 64, "lmcache", 3.0): "missing"})
    return build(spec, tmp_path_factory.mktemp("tiny"))


def cell_paths(sweep: Path) -> list[str]:
    """The cells of a sweep folder as the report names them (the key's path: with every axis,
    also for a folder written before an axis existed)."""
    return sorted(key.rel_dir for _, key in iter_cell_dirs(sweep))


def _check_report(out: Path, sweeps: list[Path]) -> str:
    """Every figure and table the report lists exists, the expected ones are listed, and the
    HTML names every cell of the sweeps. Returns the HTML text."""
    index = json.loads((out / "index.json").read_text())
    figures = {f["name"] for f in index["figures"]}
    for f in index["figures"]:
        for ext in ("png", "svg"):
            p = out / f[ext]
            assert p.is_file() and p.stat().st_size > 1000, p
    for prefix in ("jct_vs_jps", "per_turn_dram", "tlast_t1", "why", "validity", "kv_usage_dram"):
        assert any(n.startswith(prefix) for n in figures), (prefix, figures)
    for name in EXPECTED_TABLES:
        assert name in index["tables"], name
        csv, parquet = (out / n for n in index["tables"][name])
        assert csv.is_file() and parquet.is_file()
        assert list(pd.read_parquet(parquet).columns) == list(pd.read_csv(csv, nrows=0).columns)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert text.count('<img src="data:image/svg+xml;base64,') == len(index["figures"])
    assert not re.search(r'(src|href)="https?://', text), "the page must not load from the net"
    unescaped = html.unescape(text)
    for sweep in sweeps:
        for cell in cell_paths(sweep):
            assert cell in unescaped, f"report.html does not name {cell}"
    for cell in index["cells"]:
        assert cell in unescaped
    return text


@pytest.fixture
def check_report() -> Callable[[Path, list[Path]], str]:
    return _check_report
