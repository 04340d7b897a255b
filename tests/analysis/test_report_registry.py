"""The figure registry (analysis.figreg): every registered figure reaches report.html, in its
section and place, whether drawn by one process or by two workers; names are unique."""

import dataclasses
import json
import re

import pytest

from analysis import figures, figures_turns, pipeline, report
from analysis.figreg import FIGURES, Registry, figure


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def built(request, synth_sweep, tmp_path_factory) -> report.Report:
    return report.build([synth_sweep], tmp_path_factory.mktemp(f"registry-{request.param}"),
                        pipeline.Options(n_boot=20), workers=request.param)


def _expected_files(rep: report.Report) -> dict[str, list[str]]:
    drams = figures_turns.drams(rep.results)
    return {f.name: [f"{f.name}_dram{d}" for d in drams] if f.per_dram else [f.name]
            for f in FIGURES}


def _sections(text: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', text, flags=re.S))


def test_every_registered_figure_is_in_the_report(built):
    assert len(FIGURES) >= 7
    expected = _expected_files(built)
    text = built.html.read_text(encoding="utf-8")
    sections = _sections(text)
    index = json.loads((built.out / "index.json").read_text())
    assert [f["name"] for f in index["figures"]] == [n for ns in expected.values() for n in ns]
    for entry in FIGURES:
        assert entry.section in sections, (entry.name, entry.section)
        body = sections[entry.section]
        table = body.find("<table")
        for name in expected[entry.name]:
            assert (built.out / f"{name}.svg").is_file() and (built.out / f"{name}.png").is_file()
            at = body.find(f'<figure id="fig-{name}">')
            assert at >= 0, f"{name} is not in section {entry.section} of report.html"
            assert (at > table) == entry.after_table, (name, "before/after the table")
    for sid, body in sections.items():  # within a section: registry order, DRAMs in order
        ids = re.findall(r'<figure id="fig-([^"]+)">', body)
        want = [n for f in FIGURES if f.section == sid for n in expected[f.name]]
        assert sorted(ids, key=want.index) == ids and set(ids) == set(want), sid
    assert sum(len(v) for v in expected.values()) == text.count("<figure id=")
    assert all(f.figure in FIGURES for f in built.figures)


def test_the_workers_start_with_the_costliest():
    tasks = [("validity", None), ("per_turn", 400), ("why", None), ("per_turn", 64)]
    assert figures.by_cost(tasks)[0] == ("why", None)
    costs = [FIGURES[n].cost for n, _ in figures.by_cost(tasks)]
    assert costs == sorted(costs, reverse=True)
    per_turn = [t for t in figures.by_cost(tasks) if t[0] == "per_turn"]
    assert per_turn == [("per_turn", 400), ("per_turn", 64)]  # ties keep the report order


def test_a_duplicate_name_raises():
    reg = Registry()
    reg.register(name="a", cost=1, section="why", order=1)(lambda res, out: None)
    with pytest.raises(ValueError, match="'a' is registered twice"):
        reg.register(name="a", cost=2, section="jct", order=2)(lambda res, out: None)
    assert len(reg) == 1
    before = FIGURES["why"]
    with pytest.raises(ValueError, match="registered twice"):
        figure(name="why", cost=1, section="why", order=99)(figures.why)
    assert FIGURES["why"] is before and len([f for f in FIGURES if f.name == "why"]) == 1


def test_a_figure_the_page_cannot_place_raises(built, monkeypatch):
    figs = built.figures
    stray = dataclasses.replace(figs[0], figure="")
    with pytest.raises(ValueError, match="not registered"):
        report.html(built.results, [*figs, stray])
    moved = dataclasses.replace(FIGURES["validity"], section="nowhere")
    monkeypatch.setitem(FIGURES._by_name, "validity", moved)
    with pytest.raises(ValueError, match="validity -> nowhere"):
        report.html(built.results, figs)
