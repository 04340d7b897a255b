"""The report on a real sweep of the CPU engine (the `smoke_sweep` fixture of tests/conftest.py
runs `python -m launch sweep experiment=smoke`): every figure and table exists and the HTML
names every cell."""

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis import pipeline, report
from harness import kv_size

pytestmark = pytest.mark.server  # the smoke sweep it reads runs a real CPU server


@pytest.fixture
def real_sweep(request) -> Path:
    try:
        return Path(request.getfixturevalue("smoke_sweep"))
    except pytest.FixtureLookupError:
        pytest.skip("no smoke_sweep fixture (tests/conftest.py runs the real smoke sweep)")


def test_report_on_the_real_smoke_sweep(real_sweep, tmp_path, check_report):
    rep = report.build([real_sweep], tmp_path, pipeline.Options(n_boot=200), workers=1)
    text = check_report(rep.out, [real_sweep])
    assert len(rep.results.cells) >= 1
    assert rep.results.cells["folder"].all(), "the smoke sweep must have every cell's folder"
    assert "Validity of every cell" in text


def test_each_cell_records_the_kv_cache_its_engine_allocated(real_sweep):
    """harness.cell.kv_cache: the engine's own start-up line (the CPU engine's "CPU KV cache
    size: N tokens" and "Explicitly set (X/...) GiB for KV cache") in every manifest, and in
    the analysis' cells; the smoke's policies have no write-through tier, so no warning."""
    res = pipeline.compute([real_sweep], pipeline.Options(n_boot=0))
    for rel in res.cells["path"]:
        man = json.loads((real_sweep / rel / "manifest.json").read_text())
        kv = man["server"]["kv_cache"]
        assert kv["device"] == "CPU" and kv["tokens"] > 0, kv
        assert kv["gib"] == float(man["config"]["engine"]["kv_cache_space_gb"]), kv
        assert "write_through_gib" not in kv
        # what the plan reckons from the config (harness.kv_size) is what the engine took
        est = kv_size.estimate(OmegaConf.create(man["config"]))
        assert est is not None and (est.tokens, est.gib) == (kv["tokens"], kv["gib"]), est
        # vLLM says the same in its Prometheus info metric (cache_config_info's labels)
        metrics = pd.read_parquet(real_sweep / rel / "metrics.parquet")
        info = metrics[metrics["name"] == "vllm:cache_config_info"]
        assert len(info), "the cell's metrics have vLLM's cache_config_info"
        assert json.loads(info.iloc[0]["labels"])["kv_cache_size_tokens"] == str(kv["tokens"])
    assert (res.cells["kv_cache_gib"] > 0).all() and res.cells["write_through_gib"].isna().all()
    assert not [w for w in res.warnings if "host tier smaller" in w]
