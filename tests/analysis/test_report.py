import html
import json
import re

import pandas as pd
import pytest

from analysis import __main__ as cli
from analysis import compare, pipeline, report
from analysis.stats import Window
from analysis.synth import build
from tests.analysis.conftest import small_spec


@pytest.fixture(scope="module")
def built(synth_sweep, tmp_path_factory):
    return report.build([synth_sweep], tmp_path_factory.mktemp("report"),
                        pipeline.Options(n_boot=200), workers=1)


def test_report_has_every_figure_table_and_cell(built, synth_sweep, check_report):
    check_report(built.out, [synth_sweep])
    names = {f.name for f in built.figures}
    assert {"jct_vs_jps", "tlast_t1", "why", "validity", "per_turn_dram400", "per_turn_dram64",
            "kv_usage_dram64", "cached_per_turn_dram400"} <= names
    for f in built.figures:  # one scheduling order: the series are the policies, as ever
        assert " order" not in f.svg.read_text(encoding="utf-8"), f.name
    assert "Scheduling orders" not in built.html.read_text(encoding="utf-8")


def _row_of(text: str, cell: str, table: str) -> str:
    section = text.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = [r for r in section.split("<tr") if f">{cell}<" in html.unescape(r)]
    assert len(rows) == 1, (cell, table)
    return html.unescape(rows[0])


def test_invalid_cells_are_states_never_numbers(built):
    text = built.html.read_text(encoding="utf-8")
    lag = _row_of(text, "gpu=h200/dram=400/policy=fcfs/sched=fcfs/jps=6", "table-jct")
    assert "LAG" in lag and 'class="invalid"' in lag
    assert not re.search(r"\d s<", lag), "a lagging cell must not show a JCT"
    missing = _row_of(text, "gpu=h200/dram=64/policy=lmcache/sched=fcfs/jps=1", "table-jct")
    assert "MISSING" in missing
    per_turn = _row_of(text, "gpu=h100/dram=64/policy=fcfs/sched=fcfs/jps=3", "table-per-turn")
    assert "jobs_failed" in per_turn and not re.search(r">\d", per_turn.split("jobs_failed")[1])
    jct = pd.read_csv(built.tables["jct"])
    bad = jct[~jct["valid"]]
    assert bad["mean_jct_s"].isna().all() and len(bad) == 5


def test_report_says_which_window_and_n(clean_sweep, tmp_path):
    rep = report.build([clean_sweep], tmp_path, pipeline.Options(window=Window(0.25, 0.25),
                                                                n_boot=50), workers=1)
    text = html.unescape(rep.html.read_text(encoding="utf-8"))
    assert "without the first 25% (ramp-up) and the last 25% (drain)" in text
    jct = pd.read_csv(rep.tables["jct"])
    assert set(jct["n_used"].dropna()) == {6}  # 12 jobs minus 3 + 3
    svg = (tmp_path / "jct_vs_jps.svg").read_text()
    assert "N = 12 jobs/cell" in svg and "6 in window" in svg


def test_several_sweeps_side_by_side(tiny_faulty_sweep, clean_sweep, tmp_path, check_report):
    rep = report.build([tiny_faulty_sweep, clean_sweep], tmp_path, pipeline.Options(n_boot=50),
                       workers=2)
    check_report(rep.out, [tiny_faulty_sweep, clean_sweep])
    w = pd.read_csv(rep.tables["winners"])
    assert set(w["sweep"]) == {tiny_faulty_sweep.name, clean_sweep.name}


def test_reference_overlay_where_the_cell_exists(tmp_path):
    sweep = build(small_spec(name="ref", gpus=("h200",), drams=(64,), jps=(10.0,)), tmp_path)
    rep = report.build([sweep], tmp_path / "out", pipeline.Options(n_boot=50), workers=1)
    rc = pd.read_csv(rep.tables["reference_check"])
    jct = rc[rc["metric"] == "mean_jct_s"].set_index("cell")
    assert jct.loc["gpu=h200/dram=64/policy=fcfs/sched=fcfs/jps=10", "seed"] == "453 s"
    assert "seed 453 s" in (tmp_path / "out" / "jct_vs_jps.svg").read_text()


def test_compare_two_runs(tmp_path):
    a = build(small_spec(name="a", gpus=("h100",), drams=(64,), jps=(3.0,)), tmp_path / "a")
    b = build(small_spec(name="b", gpus=("h100",), drams=(64,), jps=(3.0,),
                         faults={("h100", 64, "lmcache", 3.0): "lag"}), tmp_path / "b")
    c = compare.compare(a, b, tmp_path / "cmp", pipeline.Options(n_boot=200))
    d = c.cells.set_index("policy")
    assert d.loc["fcfs", "diff_pct"] == pytest.approx(0.0) and d.loc["fcfs", "verdict"] == "same"
    assert d.loc["lmcache", "verdict"] == "B: lag" and pd.isna(d.loc["lmcache", "diff_pct"])
    assert (tmp_path / "cmp" / "compare.html").is_file()
    assert (tmp_path / "cmp" / "compare.csv").is_file()
    assert len(c.per_turn) == 3 * 8 - 8 + 8  # lmcache per-turn only in A
    assert "gpu=h100/dram=64/policy=fcfs/sched=fcfs/jps=3" in compare.summary(c)


def test_cli_report_and_errors(tiny_faulty_sweep, tmp_path, capsys):
    assert cli.main(["report", str(tiny_faulty_sweep), "--out", str(tmp_path), "--bootstrap", "20",
                     "--jobs", "1", "--window", "0.1", "0.1"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    index = json.loads((tmp_path / "index.json").read_text())
    assert "first 10%" in index["window"]
    assert cli.main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert cli.main(["report", str(tiny_faulty_sweep), "--window", "0.7", "0.7"]) == 2
