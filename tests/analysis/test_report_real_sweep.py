"""The report on a real sweep of the CPU engine (the `smoke_sweep` fixture of tests/conftest.py
runs `python -m launch sweep experiment=smoke`): every figure and table exists and the HTML
names every cell."""

from pathlib import Path

import pytest

from analysis import pipeline, report

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
