"""The one cell key: path, label, parsing and order."""

from __future__ import annotations

import pytest

from harness.cellkey import AXES, NAMES, CellKey, CellKeyError, iter_cell_dirs

K = CellKey(gpu="h100", dram=64, policy="fcfs", jps=3.0)


def test_path_round_trip_and_folder_format():
    assert K.rel_dir == "gpu=h100/dram=64/policy=fcfs/sched=fcfs/jps=3"
    assert CellKey.from_rel(K.rel_dir) == K
    quarter = K.replace(jps=0.25)
    assert quarter.rel_dir.endswith("jps=0.25")
    assert CellKey.from_rel(quarter.rel_dir) == quarter
    assert CellKey.from_rel("/" + K.rel_dir + "/") == K


def test_values_are_typed():
    k = CellKey(gpu="h100", dram=64, policy="fcfs", jps=3)  # int JPS becomes float
    assert isinstance(k.jps, float) and k == K
    assert CellKey.from_mapping({"gpu": "h100", "dram": "64", "policy": "fcfs", "jps": "3"}) == K
    with pytest.raises(CellKeyError, match="dram"):
        CellKey.from_mapping({"gpu": "h100", "dram": "6.5", "policy": "fcfs", "jps": 3})
    with pytest.raises(CellKeyError, match="jps"):
        CellKey.from_mapping({"gpu": "h100", "dram": 64, "policy": "fcfs"})


def test_bad_folders_say_what_they_expected():
    for bad in ("gpu=h100/dram=lots/policy=fcfs/jps=1", "gpu=h100/dram=64/jps=1/policy=fcfs",
                "gpu=h100/dram=64/policy=fcfs/rate=1", "gpu=h100/gpu=h200/dram=64/policy=x/jps=1"):
        with pytest.raises(CellKeyError, match="does not parse as gpu=/dram=/policy=/sched=/jps="):
            CellKey.from_rel(bad)


def test_order_follows_the_axes():
    keys = [K.replace(jps=6.0), K.replace(dram=8), K.replace(gpu="a100"), K]
    assert sorted(keys) == [K.replace(gpu="a100"), K.replace(dram=8), K, K.replace(jps=6.0)]


def test_label_and_axes():
    assert K.label == "h100 · 64 GB · fcfs · fcfs order · 3 JPS"
    assert NAMES == ("gpu", "dram", "policy", "sched", "jps")
    assert [a.group for a in AXES] == [True, True, True, False, False]


def test_folders_written_before_the_sched_axis_read_at_its_legacy_value():
    old = "gpu=h100/dram=64/policy=fcfs/jps=3"
    assert CellKey.from_rel(old) == K and K.sched == "fcfs"
    assert K.legacy_rel_dir == old
    assert K.replace(sched="program").legacy_rel_dir is None
    assert CellKey.from_manifest({"cell": {"gpu": "h100", "dram": 64, "policy": "fcfs",
                                           "jps": 3}}) == K


def test_from_config_reads_each_axis_source():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"gpu": {"name": "h100"}, "dram": {"gb": 64},
                            "policy": {"name": "fcfs"}, "sched": "fcfs", "jps": 3.0})
    assert CellKey.from_config(cfg) == K


def test_iter_cell_dirs_skips_private_folders_and_reads_legacy_ones(tmp_path):
    (tmp_path / K.rel_dir).mkdir(parents=True)
    (tmp_path / "gpu=h100/dram=64/policy=lmcache/jps=3").mkdir(parents=True)
    (tmp_path / K.rel_dir / "_attempts" / "1").mkdir(parents=True)
    (tmp_path / "gpu=h100/dram=64/policy=fcfs/_server").mkdir(parents=True)
    (tmp_path / K.replace(jps=1.0).rel_dir).mkdir(parents=True)
    assert [k for _, k in iter_cell_dirs(tmp_path)] == [K.replace(jps=1.0), K,
                                                        K.replace(policy="lmcache")]
