"""Typed config: every kind, range, name and file is refused at planning (one line naming the
key), before anything is written; planning builds each distinct workload once."""

import json
import re

import pytest
from omegaconf import OmegaConf

import workloads
from harness.errors import ConfigError
from launch import plan, schema
from tests.conftest import run_launch


def make(tmp_path, *over):
    return plan.make([f"results_dir={tmp_path}", *over], today="20260101")


@pytest.mark.parametrize(
    "over, needle",
    [
        # kinds (enums): refused at compose time, listing the allowed values
        (["cluster.executor=slrum"],
         "cluster.executor=slrum: Invalid value 'slrum', expected one of [local, slurm]"),
        (["workload.tool.dist=expo"],
         "expected one of [fixed, exponential, lognormal, file, empirical, fitted]"),
        (["engine.device=tpu"],
         "engine.device=tpu: Invalid value 'tpu', expected one of [cpu, cuda]"),
        (["workload.arrival=bursty"], "expected one of [poisson, recorded]"),
        # ranges
        (["workload.n_jobs=0"], "workload.n_jobs=0: must be a positive number of jobs"),
        (["workload.n_jobs=null"], "workload.duration_s=null: with workload.n_jobs=null"),
        (["workload.n_turns=0"], "workload.n_turns=0: must be a positive number of turns"),
        (["workload.tool_output_tokens=[]"],
         "workload.tool_output_tokens=[]: must list at least one"),
        (["workload.tool_output_tokens=[1024,-5]"],
         "workload.tool_output_tokens=[1024,-5]: sizes must be positive"),
        (["workload.first_prompt_tokens=0"], "workload.first_prompt_tokens=0: must be a positive"),
        (["workload.tool.mean_s=-1"],
         "workload.tool.mean_s=-1.0: must be a non-negative number of seconds"),
        (["workload.request_timeout_s=0"], "workload.request_timeout_s=0.0: must be a positive"),
        (["engine.kv_cache_space_gb=0.5"],
         "engine.kv_cache_space_gb=0.5: must be a whole number of GiB >= 1"),
        (["engine.kv_cache_space_gb=0"],
         "engine.kv_cache_space_gb=0.0: must be a whole number of GiB >= 1"),
        (["engine.gpu_memory_utilization=0"],
         "engine.gpu_memory_utilization=0.0: must be a fraction of VRAM in (0, 1]"),
        (["engine.gpu_memory_utilization=1.5"],
         "engine.gpu_memory_utilization=1.5: must be a fraction"),
        (["cluster.cpus_per_task=0"], "cluster.cpus_per_task=0: must be at least 1 CPU"),
        (["cluster.array_parallelism=0"], "cluster.array_parallelism=0: must be at least 1"),
        (["cluster.max_requeue=-1"],
         "cluster.max_requeue=-1: must be a non-negative number of requeues"),
        (["cluster.time_min=0"], "cluster.time_min=0: must be a positive number of minutes"),
        (["model.vocab_size=5"], "model.vocab_size=5: must exceed model.first_token_id=10"),
        # names and files
        (["experiment.name=x/../../.."], "experiment.name=x/../../..: must be a plain folder name"),
        (["experiment.name=.hidden"], "experiment.name=.hidden: must be a plain folder name"),
        (["experiment.name='a b'"], "experiment.name=a b: must be a plain folder name"),
        (["workload.trace=/nope.parquet"], "workload.trace=/nope.parquet: no such file"),
        (["workload.tool.dist=file"], "workload.tool.file=null: must name a file"),
        (["workload.tool.dist=file", "workload.tool.file=/nope.txt"],
         "workload.tool.file=/nope.txt: no such file"),
        # what only building the workload finds
        (["workload.arrival=recorded"],
         "workload.arrival=recorded: only a trace has recorded arrivals"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_at_planning(tmp_path, over, needle):
    with pytest.raises(ConfigError) as e:
        make(tmp_path, *over)
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg
    key = over[-1].split("=", 1)[0]
    assert key in msg or "workload.tool.file" in msg, msg
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_bad_input_is_refused_by_the_dry_run(tmp_path):
    r = run_launch("sweep", "--dry-run", f"results_dir={tmp_path}", "cluster.executor=slrum")
    assert r.returncode == 2 and "expected one of [local, slurm]" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr and not any(tmp_path.iterdir())


def test_typed_config_of_a_cell(tmp_path):
    p = make(tmp_path, "cluster=pace", "gpu=h100", "dram=400", "policy=fcfs", "jps=3")
    cfg = p.configs[p.cells[0]]
    t = schema.typed(cfg)
    assert isinstance(t, schema.Config) and isinstance(t.workload, schema.WorkloadConf)
    assert t.cluster.executor is schema.Executor.slurm and t.engine.device is schema.Device.cuda
    assert t.workload.tool.dist is schema.ToolDist.fixed and t.workload.arrival is None
    # str enums: comparisons, f-strings, YAML for the node and JSON records stay plain strings
    assert cfg.cluster.executor == "slurm" and f"{cfg.engine.device}" == "cuda"
    assert p.executor == "slurm"
    assert re.search(r"^  executor: slurm$", OmegaConf.to_yaml(cfg), re.M)
    back = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    assert back["engine"]["device"] == "cuda" and back["workload"]["tool"]["dist"] == "fixed"


def test_schema_dataclasses_validate_when_built_in_python():
    assert schema.ToolTimeConf(dist="exponential").dist is schema.ToolDist.exponential  # type: ignore[arg-type]
    allowed = "allowed: fixed, exponential"
    with pytest.raises(ConfigError, match=f"workload.tool.dist=gamma is unknown; {allowed}"):
        schema.ToolTimeConf(dist="gamma")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cluster.executor=pbs is unknown; allowed: local, slurm"):
        schema.ClusterConf(name="x", executor="pbs")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"workload.n_jobs=0: must be a positive number of jobs"):
        schema.WorkloadConf(name="x", n_jobs=0)
    assert schema.WorkloadConf(name="x", n_jobs=None, duration_s=60.0).n_jobs is None
    assert schema.EngineConf(name="e", package="p", version="1", device="cpu",  # type: ignore[arg-type]
                             kv_cache_space_gb=2).kv_cache_space_gb == 2  # fmt: skip


def test_a_sweep_builds_each_distinct_workload_once(tmp_path, monkeypatch):
    """60 cells of 3 policies x 4 GPUs share 5 workloads (one per JPS): 5 builds."""
    built = []
    real = workloads.build

    def counting(cfg):
        built.append(float(cfg.jps))
        return real(cfg)

    monkeypatch.setattr(workloads, "build", counting)
    p = make(tmp_path, "experiment=20260412_large_dram_sweep", "cluster=pace")
    assert len(p.cells) == 60
    assert sorted(built) == [1, 3, 6, 10, 15]


def test_a_written_workload_replays_as_a_trace_across_jps(tmp_path):
    """python -m launch workload writes one cell's jobs; workload.trace replays them; the JPS
    axis scales their recorded arrivals (and the summary says so)."""
    out = tmp_path / "w" / "cell.parquet"
    out.parent.mkdir()
    r = run_launch("workload", f"results_dir={tmp_path / 'r'}", "jps=3", "policy=fcfs",
                   "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    digest = re.search(r"digest (\w+)", r.stdout).group(1)
    assert not (tmp_path / "r").exists(), "writing a workload writes no sweep"
    p = make(tmp_path / "r", f"workload.trace={out}", "policy=fcfs", "jps=[3,6]")
    by_jps = {c.jps: workloads.build(cfg) for c, cfg in p.configs.items()}
    assert by_jps[3.0].digest() == digest
    s6 = by_jps[6.0].summary()
    got = (s6["source"], s6["arrival"], s6["jps"], s6["time_scale"])
    assert got == ("trace", "recorded", 6.0, 0.5)
    assert by_jps[6.0].jobs[-1].arrival_s == pytest.approx(by_jps[3.0].jobs[-1].arrival_s / 2)


def test_a_trace_for_another_vocabulary_is_refused(tmp_path):
    big = workloads.build(OmegaConf.create({
        "workload": {"n_jobs": 2, "duration_s": None, "n_turns": 2, "first_prompt_tokens": 64,
                     "tool_output_tokens": [16], "completion_tokens": 4, "seed": 1, "trace": None,
                     "tool": {"dist": "fixed", "mean_s": 0.1}},
        "model": {"first_token_id": 100000, "vocab_size": 128256}, "jps": 1.0}))  # fmt: skip
    path = workloads.save(big, tmp_path / "llama.jsonl")
    needle = r"workload.trace=.*llama.jsonl: job 0 has token id \d+ outside"
    with pytest.raises(ConfigError, match=needle):
        make(tmp_path / "r", f"workload.trace={path}")
