"""A sweep folder written by an older kvbench resumes when what it measures is unchanged.

An upgrade may add a config key (its schema default applies to folders that lack it) or move
a policy default out of a YAML file into the settings type; neither changes a measurement, so
neither may make the same command start a second folder or refuse the first.
"""

from __future__ import annotations

import json

import pytest

from harness.errors import ConfigError
from launch import plan


def make(tmp_path, *over, today="20260101"):
    return plan.make([f"results_dir={tmp_path}", *over], today=today)


def _rewrite(p, edit) -> None:
    f = p.sweep.path / "sweep.json"
    meta = json.loads(f.read_text())
    for ident in meta["cells"].values():
        edit(ident)
    meta["base_fingerprint"] = "0ld5t4mp0000"
    f.write_text(json.dumps(meta))


def test_a_key_the_old_folder_lacks_counts_as_its_default(tmp_path):
    p = make(tmp_path, "policy=[fcfs]")
    p.sweep.save()
    _rewrite(p, lambda ident: ident["engine"].pop("max_num_seqs"))
    again = make(tmp_path, "policy=[fcfs]", today="20260105")  # another day: found, not new
    assert again.sweep.path == p.sweep.path
    with pytest.raises(ConfigError, match=r"differs in engine.max_num_seqs"):
        make(tmp_path, "policy=[fcfs]", "engine.max_num_seqs=64", f"sweep_dir={p.sweep.path}")


def test_an_experiment_that_respells_its_overrides_keeps_the_folder(tmp_path):
    """The seed's experiments once chose workload=agent8 in experiment.overrides and now
    agent8_window: a folder made then resumes with workload=agent8 on the command line (the
    same jobs), and is refused with the experiment's new workload (other jobs)."""
    over = ("experiment=20260407_controlled_sweep", "cluster=pace", "gpu=h200", "policy=fcfs",
            "jps=[10]")
    p = make(tmp_path, *over, "workload=agent8")
    p.sweep.save()

    def made_then(ident):  # what the folder recorded before agent8_window
        ident["experiment"]["overrides"] = ["workload=agent8"]

    _rewrite(p, made_then)
    again = make(tmp_path, *over, "workload=agent8", today="20260105")
    assert again.sweep.path == p.sweep.path
    with pytest.raises(ConfigError, match=r"differs in workload.duration_s, workload.n_jobs, "
                                          r"workload.name"):
        make(tmp_path, *over, f"sweep_dir={p.sweep.path}")


def test_policy_settings_compare_with_their_defaults_filled_in(tmp_path):
    over = ("policy=[predictive_prefetch]", "jps=[1]")
    p = make(tmp_path, *over)
    p.sweep.save()

    def spelled_in_yaml(ident):  # what an older release recorded: only the YAML's keys
        ident["policy"]["settings"] = {"lead_s": 0.2}

    _rewrite(p, spelled_in_yaml)
    again = make(tmp_path, *over, today="20260105")
    assert again.sweep.path == p.sweep.path
    with pytest.raises(ConfigError, match=r"policy.settings.lead_s"):
        make(tmp_path, *over, "++policy.settings.lead_s=0.5", f"sweep_dir={p.sweep.path}")


def test_a_folder_from_before_the_sched_axis_resumes_with_its_cells_done(tmp_path):
    """Cells written as gpu=/dram=/policy=/jps= (no sched segment) are the sched=fcfs cells:
    the same command finds them done and runs only the others."""
    p = make(tmp_path, "policy=[fcfs]", "jps=[1,2]")
    p.sweep.save()
    f = p.sweep.path / "sweep.json"
    meta = json.loads(f.read_text())
    old_cells = {}
    for rel, ident in meta["cells"].items():
        ident.pop("sched")
        old_cells[rel.replace("/sched=fcfs", "")] = ident
    meta.update(cells=old_cells, matrix=sorted(old_cells), base_fingerprint="0ld5t4mp0000")
    f.write_text(json.dumps(meta))
    done = p.sweep.path / "gpu=cpu/dram=8/policy=fcfs/jps=1"
    done.mkdir(parents=True)
    (done / "DONE").write_text("ok\n")

    again = make(tmp_path, "policy=[fcfs]", "jps=[1,2]", today="20260107")
    assert again.sweep.path == p.sweep.path
    first, second = again.cells
    assert again.cell_dir(first) == done
    assert again.todo() == [second]
    assert again.cell_dir(second) == p.sweep.path / second.rel_dir
    assert sorted(again.sweep.meta["cells"]) == sorted(c.rel_dir for c in again.cells)
