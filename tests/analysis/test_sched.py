"""The scheduling-order axis (`sched`) in the analysis: a figure's series is (policy, sched),
the tables list both orders, winners compare (policy, sched) pairs, the reference policy is
taken under the same order where it ran, and compare lines cells up by the whole key."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import compare, figures, figures_turns, pipeline, plotkit, report, stats
from analysis.stats import Window
from analysis.synth import build, key
from tests.analysis import frames
from tests.analysis.conftest import small_spec

PROGRAM = "FCFS · program order"


def _spec(**kw):
    base = dict(name="orders", gpus=("h100",), drams=(64,), policies=("fcfs", "continuum"),
                scheds=("fcfs", "program"), jps=(3.0, 6.0))
    base.update(kw)
    return small_spec(**base)


@pytest.fixture(scope="module")
def orders_sweep(tmp_path_factory) -> Path:
    """1 GPU x 1 DRAM x 2 policies x 2 orders x 2 JPS; continuum·program lags at JPS 6."""
    return build(_spec(faults={key("h100", 64, "continuum", 6.0, "program"): "lag"}),
                 tmp_path_factory.mktemp("orders"))


@pytest.fixture(scope="module")
def orders(orders_sweep, tmp_path_factory) -> report.Report:
    return report.build([orders_sweep], tmp_path_factory.mktemp("orders-report"),
                        pipeline.Options(n_boot=100), workers=1)


@pytest.fixture
def drawn(monkeypatch) -> list[plt.Figure]:
    """The matplotlib figures the figure functions save (kept open for inspection)."""
    figs: list[plt.Figure] = []
    save = plotkit.save

    def keep(fig, out, name, title, caption):
        figs.append(fig)
        monkeypatch.setattr(plt, "close", lambda *_: None)
        return save(fig, out, name, title, caption)

    monkeypatch.setattr(plotkit, "save", keep)
    return figs


def _legend(fig: plt.Figure) -> dict[str, object]:
    return {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                             fig.legends[0].legend_handles, strict=True)}


def test_both_orders_have_their_own_legend_entry_and_line(orders, drawn, tmp_path):
    figures.jct_vs_jps(orders.results, tmp_path)
    fig = drawn[0]
    leg = _legend(fig)
    assert {"FCFS", PROGRAM, "Continuum", "Continuum · program order"} <= set(leg)
    assert leg["FCFS"].get_linestyle() == "-" and leg["FCFS"].get_fillstyle() == "full"
    assert leg[PROGRAM].get_linestyle() == "--" and leg[PROGRAM].get_fillstyle() == "top"
    assert leg[PROGRAM].get_color() == leg["FCFS"].get_color()  # the policy keeps its colour
    ax = fig.axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: one per series
    assert set(lines) == {"FCFS", PROGRAM, "Continuum", "Continuum · program order"}
    for label in ("FCFS", PROGRAM):  # both drawn, at both JPS
        assert np.isfinite(lines[label].get_ydata()).sum() == 2, label
    assert np.isfinite(lines["Continuum · program order"].get_ydata()).sum() == 1  # JPS 6 lags
    assert lines[PROGRAM].get_linestyle() == "--"
    assert not np.allclose(lines["FCFS"].get_ydata(), lines[PROGRAM].get_ydata())
    marks = [t.get_text() for t in ax.texts]
    assert "✕ LAG · program order" in marks  # an invalid mark says which order it is


def test_per_turn_draws_a_line_per_order(orders, drawn, tmp_path):
    figures_turns.per_turn(orders.results, tmp_path, 64)
    ax = drawn[0].axes[0]  # JPS 3
    program = [ln for ln in ax.lines if ln.get_fillstyle() == "top"]
    default = [ln for ln in ax.lines if ln.get_fillstyle() == "full" and ln.get_marker() != "*"]
    assert len(program) == 2 and len(default) == 2
    assert {ln.get_linestyle() for ln in program} == {"--"}
    assert PROGRAM in _legend(drawn[0])


def test_report_lists_both_orders(orders, orders_sweep, check_report):
    text = html.unescape(check_report(orders.out, [orders_sweep]))
    index = json.loads((orders.out / "index.json").read_text())
    for o in ("fcfs", "program"):
        assert f"gpu=h100/dram=64/policy=fcfs/sched={o}/jps=3" in index["cells"]
    jct = pd.read_csv(orders.tables["jct"])
    assert set(jct["sched"]) == {"fcfs", "program"} and len(jct) == 8
    for table in ("table-jct", "table-per-turn", "table-why", "table-validity"):
        body = text.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
        assert "/sched=fcfs/" in body and "/sched=program/" in body, table
    assert "Scheduling orders: fcfs" in text and "program (program order)" in text
    svg = (orders.out / "jct_vs_jps.svg").read_text(encoding="utf-8")
    assert PROGRAM in svg and "Continuum · program order" in svg
    assert "program order" in (orders.out / "validity.svg").read_text(encoding="utf-8")


def test_report_winners_and_versus_reference(orders):
    res = orders.results
    w = res.winners
    assert len(w) == 2 and set(w["policies"]) == {4}  # one group per JPS: 2 policies x 2 orders
    for r in w.to_dict("records"):
        means = res.jct.set_index(["policy", "sched", "jps"])["mean_jct_s"]
        best = means.xs(r["jps"], level="jps").idxmin()
        assert (r["winner"], r["winner_sched"]) == best
    six = w[w["jps"] == 6.0].iloc[0]
    assert "Continuum · program order (lag)" in six["invalid"]
    vs = res.vs.set_index(["policy", "sched", "jps"])
    assert vs.loc[("fcfs", "program", 3.0), "vs_sched"] == "program"  # same order: it ran
    assert vs.loc[("fcfs", "program", 6.0), "vs_sched"] == "fcfs"  # its program cell lags
    assert vs.loc[("fcfs", "fcfs", 3.0), "vs_sched"] == "fcfs"
    assert ("continuum", "program", 3.0) not in vs.index  # the reference is not compared
    text = html.unescape(orders.html.read_text(encoding="utf-8"))
    jct = text.split('id="table-jct"', 1)[1].split("</table>", 1)[0]
    assert "(vs Continuum · program order)" in jct and "(vs Continuum)" in jct


def test_the_seed_is_checked_against_the_engines_order_only(tmp_path):
    sweep = build(_spec(name="ref", gpus=("h200",), jps=(10.0,)), tmp_path)
    rep = report.build([sweep], tmp_path / "out", pipeline.Options(n_boot=50), workers=1)
    rc = pd.read_csv(rep.tables["reference_check"])
    assert not rc["cell"].str.contains("sched=program").any()
    jct = rc[rc["metric"] == "mean_jct_s"].set_index("cell")
    assert jct.loc["gpu=h200/dram=64/policy=fcfs/sched=fcfs/jps=10", "seed"] == "453 s"
    win = rc[rc["metric"] == "winner"]
    assert set(win["cell"]) == {"gpu=h200/dram=64/jps=10"}  # a group has no order


# --- winners and the reference comparison on frames with known answers --------------------

F = ("h100", 400, "fcfs", "fcfs", 3.0)
FP = ("h100", 400, "fcfs", "program", 3.0)
C = ("h100", 400, "continuum", "fcfs", 3.0)
CP = ("h100", 400, "continuum", "program", 3.0)


def _group(jcts: dict, **states):
    jobs = frames.jobs(jcts)
    cells = frames.cells(list(jcts), **states)
    s = stats.job_samples(stats.window_jobs(jobs, Window()), cells[cells["valid"]])
    return cells, s, stats.bootstrap(s, 500, 0.95, seed=3)


def _base(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, n)


def test_program_order_wins_against_its_policy_in_the_engines_order():
    b = _base()
    cells, s, boot = _group({F: list(b * 1.5), FP: list(b * 0.8), C: list(b)})
    w = stats.winners(cells, s, boot).iloc[0]
    assert (w["winner"], w["winner_sched"]) == ("fcfs", "program")
    assert (w["runner_up"], w["runner_up_sched"]) == ("continuum", "fcfs")
    assert w["pct_vs_runner_up"] == pytest.approx(-20.0)
    assert w["continuum_sched"] == "fcfs"  # no continuum in program order: its engine order
    assert w["pct_vs_continuum"] == pytest.approx(-20.0)
    assert w["verdict"].startswith(f"{PROGRAM} -20.0% vs Continuum")
    assert w["policies"] == 3 and w["valid"] == 3
    assert stats.group_label(w) == "gpu=h100/dram=400/jps=3"


def test_reference_under_the_same_order_when_it_ran():
    b = _base()
    cells, s, boot = _group({F: list(b * 1.5), FP: list(b * 0.6), C: list(b), CP: list(b * 0.8)})
    w = stats.winners(cells, s, boot).iloc[0]
    assert (w["winner"], w["winner_sched"]) == ("fcfs", "program")
    assert w["continuum_sched"] == "program"
    assert w["pct_vs_continuum"] == pytest.approx(-25.0)
    v = stats.versus(s, boot).set_index(["policy", "sched"])
    assert v.loc[("fcfs", "program"), "vs_sched"] == "program"
    assert v.loc[("fcfs", "program"), "pct"] == pytest.approx(-25.0)
    assert v.loc[("fcfs", "fcfs"), "vs_sched"] == "fcfs"
    assert v.loc[("fcfs", "fcfs"), "pct"] == pytest.approx(50.0)
    assert len(v) == 2 and bool(v["paired"].all())  # same jobs: paired across orders


def test_an_invalid_order_is_named_and_the_reference_falls_back():
    b = _base()
    cells, s, boot = _group({F: list(b * 1.5), FP: list(b * 0.6), C: list(b), CP: list(b * 0.8)},
                            continuum__program="lag")
    w = stats.winners(cells, s, boot).iloc[0]
    assert "Continuum · program order (lag)" in w["invalid"] and w["valid"] == 3
    assert w["continuum_sched"] == "fcfs"
    assert w["pct_vs_continuum"] == pytest.approx(-40.0)


def test_a_winning_reference_policy_is_not_compared_with_itself():
    b = _base()
    cells, s, boot = _group({F: list(b * 1.5), C: list(b), CP: list(b * 0.8)})
    w = stats.winners(cells, s, boot).iloc[0]
    assert (w["winner"], w["winner_sched"]) == ("continuum", "program")
    assert (w["runner_up"], w["runner_up_sched"]) == ("continuum", "fcfs")
    assert np.isnan(w["pct_vs_continuum"]) and w["continuum_sched"] is None


# --- compare: cells line up by the whole key ----------------------------------------------

def _legacy(sweep: Path) -> Path:
    """Rewrite a synthetic sweep as a release before the sched axis wrote it: no sched=
    folder segment, no sched in the manifests' cell or the matrix."""
    for cell in sorted(sweep.glob("gpu=*/dram=*/policy=*/sched=fcfs/jps=*")):
        man = json.loads((cell / "manifest.json").read_text())
        del man["cell"]["sched"]
        (cell / "manifest.json").write_text(json.dumps(man))
        shutil.move(cell, cell.parent.parent / cell.name)
        cell.parent.rmdir()
    meta = json.loads((sweep / "sweep.json").read_text())
    del meta["matrix"]["sched"]
    (sweep / "sweep.json").write_text(json.dumps(meta))
    return sweep


def test_compare_lines_cells_up_by_order(tmp_path):
    spec = dict(jps=(3.0,))
    a = build(_spec(name="a", **spec), tmp_path / "a")
    b = build(_spec(name="b", faults={key("h100", 64, "fcfs", 3.0, "program"): "lag"}, **spec),
              tmp_path / "b")
    c = compare.compare(a, b, tmp_path / "cmp", pipeline.Options(n_boot=100))
    d = c.cells.set_index(["policy", "sched"])
    assert len(d) == 4
    assert d.loc[("fcfs", "program"), "verdict"] == "B: lag"
    assert d.loc[("fcfs", "fcfs"), "verdict"] == "same"
    assert d.loc[("fcfs", "fcfs"), "diff_pct"] == pytest.approx(0.0)
    assert "gpu=h100/dram=64/policy=fcfs/sched=program/jps=3" in compare.summary(c)
    t = c.per_turn
    assert len(t) == 4 * 8 and t["mean_latency_s_b"].isna().sum() == 8  # fcfs·program: A only
    assert t.loc[t["mean_latency_s_b"].isna(), "sched"].eq("program").all()


def test_compare_a_sweep_without_the_axis_with_one_that_has_it(tmp_path):
    old = _legacy(build(_spec(name="old", scheds=("fcfs",), jps=(3.0,)), tmp_path / "old"))
    assert not list(old.glob("**/sched=*"))
    new = build(_spec(name="new", scheds=("fcfs",), jps=(3.0,)), tmp_path / "new")
    c = compare.compare(old, new, tmp_path / "cmp", pipeline.Options(n_boot=100))
    assert set(c.cells["sched"]) == {"fcfs"} and len(c.cells) == 2
    assert (c.cells["verdict"] == "same").all()  # same synthetic data: the cells line up
