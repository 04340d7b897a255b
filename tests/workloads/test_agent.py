import numpy as np
import pytest
from omegaconf import OmegaConf

from launch.schema import ToolTimeConf, WorkloadConf
from workloads import agent, arrivals, io, tooltime

VOCAB = (10, 32000)


def wl(**kw) -> WorkloadConf:
    return OmegaConf.structured(WorkloadConf(name="t", **kw))


def test_poisson_arrivals_have_the_asked_rate():
    rng = np.random.default_rng(1)
    t = arrivals.poisson(rng, 3.0, 20001)
    gaps = np.diff(t)
    assert t[0] == 0.0
    assert gaps.mean() == pytest.approx(1 / 3.0, rel=0.03)
    # exponential gaps: coefficient of variation 1, and P(gap > mean) = e^-1
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert (gaps > 1 / 3.0).mean() == pytest.approx(np.exp(-1), abs=0.015)


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_poisson_rejects_bad_rate(bad):
    with pytest.raises(ValueError, match="positive"):
        arrivals.poisson(np.random.default_rng(0), bad, 3)


def test_seed_gives_identical_ids_and_another_seed_others():
    a = agent.generate(wl(n_jobs=20), 3.0, VOCAB)
    b = agent.generate(wl(n_jobs=20), 3.0, VOCAB)
    c = agent.generate(wl(n_jobs=20, seed=7), 3.0, VOCAB)
    assert a.digest() == b.digest()
    assert a.jobs[5].tool_outputs == b.jobs[5].tool_outputs
    assert a.digest() != c.digest()
    assert a.jobs[0].first_prompt != c.jobs[0].first_prompt


def test_token_ids_do_not_depend_on_load():
    """The same jobs at every JPS (only arrival times change), so cells compare job for job."""
    a = agent.generate(wl(n_jobs=10), 1.0, VOCAB)
    b = agent.generate(wl(n_jobs=10), 10.0, VOCAB)
    assert [j.first_prompt for j in a.jobs] == [j.first_prompt for j in b.jobs]
    assert a.jobs[-1].arrival_s > b.jobs[-1].arrival_s


def test_seed_workload_shape():
    w = agent.generate(wl(n_jobs=50), 3.0, VOCAB)
    sizes = {1024, 1280, 1536, 1792, 2048, 2304, 2560}
    for j in w.jobs:
        assert j.n_turns == 8
        assert sorted(len(t) for t in j.tool_outputs) == sorted(sizes)  # each size once, shuffled
        assert j.prompt_tokens(1) == 1600
        assert 12_000 <= j.prompt_tokens(8) <= 15_000  # "reaching ~13K at turn 8"
        assert all(VOCAB[0] <= x < VOCAB[1] for x in j.first_prompt)
    orders = {tuple(len(t) for t in j.tool_outputs) for j in w.jobs}
    assert len(orders) > 40  # shuffled per job
    firsts = {j.first_prompt[:16] for j in w.jobs}
    assert len(firsts) == 50  # no shared prefixes


def test_job_count_from_duration():
    assert agent.job_count(None, 60.0, 3.0) == 180
    with pytest.raises(ValueError, match="duration_s"):
        agent.job_count(None, None, 3.0)


@pytest.mark.parametrize("dist", ["fixed", "exponential", "lognormal"])
def test_tool_time_means(dist):
    t = tooltime.make(ToolTimeConf(dist=dist, mean_s=0.5, sigma=0.6))
    x = np.array(t.draw(np.random.default_rng(3), 40000))
    assert x.mean() == pytest.approx(0.5, rel=0.03)


def test_tool_time_from_file(tmp_path):
    f = tmp_path / "tools.txt"
    f.write_text("0.1\n2.0\n0.3\n")
    t = tooltime.make(ToolTimeConf(dist="file", file=str(f)))
    assert t.draw(None, 4) == [0.1, 2.0, 0.3, 0.1]


def test_unknown_tool_dist_names_the_allowed():
    """Untyped input (a manifest's config) too: the schema's enum refuses it at planning."""
    with pytest.raises(ValueError, match="fixed, exponential, lognormal, file"):
        tooltime.make(OmegaConf.create({"dist": "gamma", "mean_s": 0.5}))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_workload_file_roundtrip(tmp_path, suffix):
    w = agent.generate(wl(n_jobs=5, tool=ToolTimeConf(dist="exponential")), 2.0, VOCAB)
    back = io.load(io.save(w, tmp_path / f"w{suffix}"))
    assert back.digest() == w.digest()
    assert back.jps == 2.0 and back.seed == 42


def test_same_jobs_for_every_policy_and_engine(tmp_path):
    """The cell's workload is built from its composed config: policy and engine do not enter."""
    from launch import plan
    from workloads import build as load_workload

    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "gpu=h100", "dram=400",
                   "workload=agent8", "policy=[fcfs,lmcache,continuum_ttl]", "jps=3"],
                  today="20260101")  # fmt: skip
    digests = {load_workload(cfg).digest() for cfg in p.configs.values()}
    assert len(digests) == 1
    over = [f"results_dir={tmp_path}", "workload=agent8", "policy=fcfs", "jps=3"]
    cpu = plan.make(over, today="20260101")
    (cfg,) = cpu.configs.values()
    gpu_cfg = next(iter(p.configs.values()))
    assert cfg.model.vocab_size != gpu_cfg.model.vocab_size  # the tiny model's is smaller
    same_vocab = cfg.copy()
    same_vocab.model.vocab_size = gpu_cfg.model.vocab_size
    same_vocab.model.first_token_id = gpu_cfg.model.first_token_id
    assert load_workload(same_vocab).digest() in digests


@pytest.mark.parametrize(
    "kw, jps, vocab, digest",
    [
        ({}, 1.0, (1000, 128256), "fe212e7f57623e55"),  # the seed's job, seed 42, Llama-3.1-8B
        ({}, 3.0, (10, 128256), "76a8b68a2d54d78d"),
        ({"n_jobs": 6, "n_turns": 4, "first_prompt_tokens": 256,
          "tool_output_tokens": [128, 192, 256], "completion_tokens": 8},
         1.0, (10, 32000), "57e20f730409eb73"),  # workload=smoke, the tiny model
    ],
)  # fmt: skip
def test_seed_digests_are_pinned(kw, jps, vocab, digest):
    """The digests of main before the workload registry: generation must not drift."""
    assert agent.generate(wl(**kw), jps, vocab).digest() == digest
