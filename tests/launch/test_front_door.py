"""The front door: ``python -m launch sweep gpu=h100 dram=400`` plans the seed's sweep for that
GPU; the cluster profile is found (``cluster=auto``) with the user's site settings; a dry run
needs no SLURM binary; a policy that cannot run says how to run it or leave it out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from launch import cluster, plan, submit
from tests.conftest import REPO

SLURM_BINARIES = {"sbatch", "srun", "sinfo", "squeue", "scancel", "sacct", "scontrol", "salloc",
                  "sattach", "sbcast", "scrontab", "sdiag", "sprio", "sreport", "sshare",
                  "sstat", "strigger", "sview", "sacctmgr"}  # fmt: skip


def site(tmp_path: Path, text: str) -> dict[str, str]:
    """An environment whose user site file (XDG_CONFIG_HOME/kvbench/cluster.yaml) is ``text``."""
    conf = tmp_path / "xdg"
    (conf / "kvbench").mkdir(parents=True)
    (conf / "kvbench" / "cluster.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVBENCH_CLUSTER")}
    return {**env, "XDG_CONFIG_HOME": str(conf)}


PACE_SITE = "profile: pace\naccount: gts-test\nqos: inferno\nsetup: ['module load cuda/12.4']\n"


def make(tmp_path, *over, environ=None):
    return plan.make([f"results_dir={tmp_path / 'results'}", *over], today="20261129",
                     environ=environ)  # fmt: skip


def test_the_mission_command_plans_the_seed_sweep_for_that_gpu(tmp_path):
    """``sweep gpu=h100 dram=400`` with the user's site file naming the cluster profile: the
    seed's sweep, field by field, on that profile with the site's account and QOS."""
    p = make(tmp_path, "gpu=h100", "dram=400", environ=site(tmp_path, PACE_SITE))
    assert p.cluster.profile == "pace" and p.experiment_defaulted
    assert p.sweep.path.name == "20261129_h100_dram400"
    assert {c.gpu for c in p.cells} == {"h100"} and {c.dram for c in p.cells} == {400}
    assert sorted({c.policy for c in p.cells}) == sorted(
        ["fcfs", "lmcache", "continuum", "native_offload", "predictive_prefetch"])
    assert sorted({c.jps for c in p.cells}) == [1, 3, 6, 10, 15]
    assert len(p.cells) == 25
    for c in p.cells:
        cfg = p.configs[c]
        w = cfg.workload  # the seed's job, sized by its arrival window: JPS x 40 s of jobs
        assert (w.name, w.n_jobs, w.duration_s, w.n_turns, w.seed, w.completion_tokens) == (
            "agent8_window", None, 40, 8, 42, 20)
        assert w.first_prompt_tokens == 1600 and w.tool.mean_s == 0.5
        assert cfg.model.name == "llama31_8b" and cfg.engine.name == "vllm-cuda"
        assert cfg.engine.device == "cuda"
        assert (cfg.cluster.name, cfg.cluster.executor) == ("pace", "slurm")
        assert (cfg.cluster.account, cfg.cluster.qos) == ("gts-test", "inferno")
        assert list(cfg.cluster.setup) == ["module load cuda/12.4"]
        assert cfg.experiment.name == "h100_dram400"
    items = [(c, p.configs[c], p.cell_dir(c)) for c in p.cells]
    groups = submit.server_groups(items)
    arrays = {submit.group_key(submit.resources(g[0][1])) for g in groups}
    assert len(arrays) == 1, "one resource group: one array"
    res = submit.resources(p.configs[p.cells[0]])
    assert res["slurm_gres"] == "gpu:h100:1" and res["mem_gb"] == 400 + 48
    assert res["slurm_account"] == "gts-test" and res["slurm_qos"] == "inferno"


def test_two_gpus_make_two_arrays_and_a_folder_named_after_both(tmp_path):
    p = make(tmp_path, "gpu=[h100,a100]", "dram=200", "policy=fcfs", "jps=3",
             environ=site(tmp_path, PACE_SITE))  # fmt: skip
    assert p.sweep.path.name == "20261129_h100-a100_dram200"
    items = [(c, p.configs[c], p.cell_dir(c)) for c in p.cells]
    arrays = {submit.group_key(submit.resources(g[0][1])) for g in submit.server_groups(items)}
    assert len(arrays) == 2


def test_experiment_name_and_explicit_overrides_win(tmp_path):
    env = site(tmp_path, PACE_SITE)
    p = make(tmp_path, "gpu=h100", "dram=64", "experiment.name=mine", "policy=fcfs",
             "cluster.account=gts-other", environ=env)  # fmt: skip
    assert p.sweep.path.name == "20261129_mine"
    assert p.base.cluster.account == "gts-other" and p.base.cluster.qos == "inferno"
    assert {c.policy for c in p.cells} == {"fcfs"}
    assert sorted({c.jps for c in p.cells}) == [1, 3, 6, 10, 15]
    # Naming an experiment: that experiment, not the seed's sweep.
    p = make(tmp_path, "gpu=h100", "experiment=continuum_ablation", environ=env)
    assert not p.experiment_defaulted and p.base.experiment.name == "continuum_ablation"
    # Explicit cluster=: that profile; the site's settings belong to pace, not to ci.
    p = make(tmp_path, "gpu=h100", "dram=8", "policy=fcfs", "cluster=ci", environ=env)
    assert p.cluster.profile == "ci" and p.base.cluster.account is None


def test_without_a_gpu_the_smoke_stays_the_default_and_runs_here(tmp_path):
    p = make(tmp_path, environ=site(tmp_path, PACE_SITE))
    assert p.base.experiment.name == "smoke" and p.cluster.profile == "local"
    assert p.base.workload.name == "smoke" and p.sweep.path.name == "20261129_smoke"


@pytest.mark.parametrize(
    "env, has_sbatch, needs_gpu, profile, why",
    [
        ({}, True, False, "local", "CPU-engine cells"),
        ({}, True, True, "slurm", "sbatch found at /usr/bin/sbatch"),
        ({}, False, True, "local", "no sbatch"),
        ({"KVBENCH_CLUSTER": "pace"}, False, False, "pace", "KVBENCH_CLUSTER=pace"),
        ({"site": "profile: ci\n"}, False, True, "ci", "the profile of"),
        ({"site": "profile: ci\n"}, True, False, "local", "CPU-engine cells"),
    ],
)
def test_auto_resolution(tmp_path, env, has_sbatch, needs_gpu, profile, why):
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    if "site" in env:
        environ = site(tmp_path, env.pop("site"))
        environ = {k: v for k, v in environ.items() if not k.startswith("KVBENCH_CLUSTER")}
    environ.update(env)
    choice = cluster.resolve(None, needs_gpu, environ,
                             which=lambda b: "/usr/bin/sbatch" if has_sbatch else None)
    assert choice.profile == profile and why in choice.why, choice
    assert cluster.resolve("pace", needs_gpu, environ).profile == "pace"  # explicit wins


def test_a_bad_site_file_is_refused_with_its_name(tmp_path):
    env = site(tmp_path, "profile: pace\naccout: gts-typo\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml: unknown key accout; allowed: profile"):
        make(tmp_path, "gpu=h100", "dram=64", environ=env)
    env = site(tmp_path / "b", "profile: pace\ntime_min: forever\n")
    with pytest.raises(ConfigError, match=r"time_min='forever'"):
        make(tmp_path, "gpu=h100", "dram=64", "policy=fcfs", environ=env)
    env = {**os.environ, "KVBENCH_CLUSTER_FILE": str(tmp_path / "nope.yaml")}
    with pytest.raises(ConfigError, match="KVBENCH_CLUSTER_FILE=.*no such file"):
        make(tmp_path, environ=env)
    assert not (tmp_path / "results").exists(), "nothing written for bad input"


def test_a_policy_that_cannot_run_says_how_to_run_it_and_how_to_leave_it_out(tmp_path):
    env = {k: v for k, v in site(tmp_path, PACE_SITE).items()
           if k != "KVBENCH_CONTINUUM_PYTHON"}  # fmt: skip
    saved = os.environ.pop("KVBENCH_CONTINUUM_PYTHON", None)  # the fork env is read by OmegaConf
    try:
        with pytest.raises(ConfigError) as e:
            make(tmp_path, "gpu=h100", "dram=400", environ=env)
    finally:
        if saved is not None:
            os.environ["KVBENCH_CONTINUUM_PYTHON"] = saved
    msg = str(e.value)
    assert "\n" not in msg
    assert "export KVBENCH_CONTINUUM_PYTHON=" in msg and "policy=continuum_ttl" in msg
    assert msg.endswith("or leave it out: policy=[fcfs,lmcache,native_offload,predictive_prefetch]")


def test_the_plan_shows_what_implementation_runs_per_policy(tmp_path):
    r = run(tmp_path, "sweep", "gpu=h100", "dram=400", "--dry-run", env=site(tmp_path, PACE_SITE))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "cluster: pace (auto: the profile of" in out and "settings from" in out
    assert "account, qos, setup" in out
    assert "the Continuum fork (Hanchenli/vllm-continuum" in out
    assert "LMCache's LMCacheConnectorV1, 400 GB local CPU backend" in out
    assert "vLLM's own OffloadingConnector" in out
    assert "kvbench's PredictivePrefetchConnector" in out
    assert "1 job array(s) would be submitted" in out
    assert "workload agent8_window: 400 jobs (40 s arrival window at 10 JPS) x 8 turns" in out
    assert "engine vllm-cuda" in out
    assert "#SBATCH --account=gts-test" in out and "#SBATCH --gres=gpu:h100:1" in out
    assert "module load cuda/12.4" in out
    assert not (tmp_path / "results").exists()


# --- no SLURM on the PATH (a laptop) --------------------------------------------------------


@pytest.fixture
def path_without_slurm(tmp_path) -> str:
    """A PATH like this one with every SLURM command left out (a farm of links)."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = farm / name
            if name in SLURM_BINARIES or link.exists() or link.is_symlink():
                continue
            link.symlink_to(os.path.join(d, name))
    return str(farm)


def run(tmp_path, *args, env=None, path=None):
    env = dict(env or os.environ)
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200")
    if path:
        env["PATH"] = path
    argv = [sys.executable, "-m", "launch", *args, f"results_dir={tmp_path}/results"]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_a_dry_run_needs_no_slurm(tmp_path, path_without_slurm):
    assert shutil.which("sbatch", path=path_without_slurm) is None
    r = run(tmp_path, "sweep", "gpu=h100", "dram=400", "cluster=pace", "--dry-run",
            path=path_without_slurm)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "#SBATCH --gres=gpu:h100:1" in r.stdout
    assert "#SBATCH --mem=448GB" in r.stdout and "#SBATCH --array=0-24%8" in r.stdout
    for jps, jobs in [(1, 40), (3, 120), (6, 240), (10, 400), (15, 600)]:
        assert f"workload agent8_window: {jobs} jobs (40 s arrival window at {jps} JPS)" in r.stdout
    # The same profile from the site file, found by cluster=auto on the laptop.
    env = site(tmp_path, PACE_SITE)
    r = run(tmp_path, "sweep", "gpu=h100", "dram=400", "--dry-run", env=env,
            path=path_without_slurm)  # fmt: skip
    assert r.returncode == 0 and "#SBATCH --qos=inferno" in r.stdout, r.stdout + r.stderr
    # Submitting from there is refused in one line, with nothing written.
    r = run(tmp_path, "sweep", "gpu=h100", "dram=400", env=env, path=path_without_slurm)
    assert r.returncode == 2 and "sbatch, which is not on this machine's PATH" in r.stdout
    assert not (tmp_path / "results").exists()


def test_the_preview_script_is_the_one_submitit_submits(tmp_path):
    """The dry run renders the script without SLURM; where srun exists, it must equal what
    submitit's own AutoExecutor would write for the same parameters."""
    if shutil.which("srun") is None:
        pytest.skip("needs srun for submitit's AutoExecutor")
    from submitit.slurm.slurm import _make_sbatch_string

    p = make(tmp_path, "gpu=h100", "dram=400", "policy=fcfs", environ=site(tmp_path, PACE_SITE))
    cfg = p.configs[p.cells[0]]
    folder = tmp_path / "_submitit"
    ex = submit.slurm_executor(folder, cfg, submit.resources(cfg), f"kvbench-{cfg.experiment.name}")
    real = _make_sbatch_string(command="python -u -m submitit.core._submit " + str(folder),
                               folder=folder, map_count=5, **ex._executor.parameters)  # fmt: skip
    assert submit.sbatch_preview(tmp_path, cfg, 5) == real


# --- cluster=auto on the one-machine SLURM cluster (a fake h100 gres; scripts/slurm-up.sh) --


@pytest.mark.slurm
def test_auto_submits_to_the_site_profile_where_sbatch_is(tmp_path):
    """The mission's command shape with no cluster flag: the site file names ``ci``, sbatch
    is on the PATH; the GPU cells go to SLURM as one array asking for the fake h100. (The
    cells cannot run here: no CUDA; the array is cancelled once SLURM has taken it.)"""
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        if os.environ.get("KVBENCH_REQUIRE_SLURM") == "1":
            pytest.fail("SLURM is required (KVBENCH_REQUIRE_SLURM=1): run scripts/slurm-up.sh")
        pytest.skip("no SLURM cluster here: run scripts/slurm-up.sh")
    env = site(tmp_path, "profile: ci\ncpus_per_task: 1\n")
    r = run(tmp_path, "sweep", "gpu=h100", "dram=8", "policy=fcfs", "jps=[1,3]", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cluster: ci (auto: the profile of" in r.stdout
    assert "submitted 2 cells as 1 job array(s)" in r.stdout
    array = r.stdout.split("job array(s): ", 1)[1].split()[0]
    try:
        q = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %b %j"],
                           capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        sacct = subprocess.run(["sacct", "-n", "-X", "-j", array, "-o", "JobID,ReqTRES%60"],
                               capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert "h100" in q + sacct, (q, sacct)
        assert "kvbench-h100_dram8" in q or "h100" in sacct
        (sweep,) = (tmp_path / "results").glob("*_h100_dram8")
        assert sweep.name.endswith("_h100_dram8")
    finally:
        subprocess.run(["scancel", array], capture_output=True, timeout=30)
