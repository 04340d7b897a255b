import math
from pathlib import Path

import pytest

from analysis import reference

# The seed text the reference statements quote, kept beside reference.csv so the check runs on
# every clone; the team's shared copy, where present, must be the same text.
SEED = Path(reference.__file__).resolve().parent / "seed" / "research-update-2026-04-14.txt"
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / SEED.name


@pytest.fixture(scope="module")
def ref():
    return reference.load_reference()


def _row(ref, rid):
    return ref.set_index("id").loc[rid].to_dict() | {"id": rid}


def test_seed_numbers_are_recorded_with_their_section(ref):
    jct = ref[ref["metric"] == "mean_jct_s"].set_index("policy")
    assert jct.loc["fcfs", "value_lo"] == 453 and jct.loc["lmcache", "value_lo"] == 516
    assert jct.loc["continuum", "value_lo"] == 126
    assert set(jct["section"]) == {"2.2"} and set(jct["gpu"]) == {"h200"}
    pct = ref[ref["metric"].isin(["pct_vs", "pct_win"])].set_index("id")
    assert pct.loc["pct_h100_400_lmcache_3", "value_lo"] == -31
    assert pct.loc["pct_h100_400_lmcache_6", "value_lo"] == -34
    assert pct.loc["pct_h200_400_lmcache_6", "value_lo"] == -4.2
    assert _row(ref, "turn_h100_400_3_fcfs_t7")["value_lo"] == 10.5
    assert _row(ref, "turn_h100_400_3_lmcache")["approx"]
    assert set(ref["source"]) == {"research-update-2026-04-14"}
    assert ref["section"].str.match(r"^[23]\.\d$").all()


def test_every_quote_is_verbatim_in_the_seed(ref):
    text = SEED.read_text(encoding="utf-8")
    for rid, quote in zip(ref["id"], ref["quote"], strict=True):
        assert quote in text, rid
    if SHARED_SEED.is_file():
        assert SHARED_SEED.read_text(encoding="utf-8") == text, "analysis/seed/ is out of date"


def test_matching_and_texts(ref):
    r = _row(ref, "turn_400_15_continuum")  # h200;h100, 400 GB, JPS 15
    assert reference.matches(r, "h100", 400, "continuum", 15.0)
    assert not reference.matches(r, "a100", 400, "continuum", 15.0)
    assert not reference.matches(r, "h100", 64, "continuum", 15.0)
    assert not reference.matches(r, "h100", 400, "fcfs", 15.0)
    assert reference.seed_text(r) == "5–14 s"
    assert reference.seed_text(_row(ref, "turn_h100_400_3_lmcache")) == "~3 s"
    assert reference.seed_text(_row(ref, "t8t1_continuum")) == "< 1×"
    any_gpu = _row(ref, "win_any_15")
    assert reference.matches(any_gpu, "l40s", 100, None, 15.0)
    ge6 = _row(ref, "t8t1_continuum")  # JPS >= 6
    assert reference.matches(ge6, "h200", 400, "continuum", 10.0)
    assert not reference.matches(ge6, "h200", 400, "continuum", 3.0)


def test_agrees_widens_by_tolerance(ref):
    point = _row(ref, "jct_h200_64_fcfs_10")  # 453 s
    assert reference.agrees(point, 500.0, 500.0, 0.25)
    assert not reference.agrees(point, 600.0, 600.0, 0.25)
    bound = _row(ref, "turn_h200_400_3_fcfs")  # < 4 s over T1..T8
    assert reference.agrees(bound, 0.5, 3.9, 0.0)
    assert not reference.agrees(bound, 0.5, 4.5, 0.0)
    assert reference.agrees(bound, math.nan, 1.0, 0.25) is None
