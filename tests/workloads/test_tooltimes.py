"""Tool-time distributions from a trace (workload.tool.dist=empirical | fitted): per-tool
frequencies, recorded times, log-normal fits, named tools in the seed's 8-turn job, and the
planning errors."""

import numpy as np
import pytest
from omegaconf import OmegaConf

import workloads
from harness.errors import ConfigError
from launch import plan
from launch.schema import ToolTimeConf, WorkloadConf
from workloads import agent, io, tooltime
from workloads.errors import WorkloadError
from workloads.job import JobSpec, Workload

TRACELAB = "workloads/samples/tracelab_sample.jsonl"
LMCACHE = "workloads/samples/lmcache_agentic_sample.parquet"
VOCAB = (10, 32000)


def tool_trace(tmp_path, tools: dict[str, np.ndarray], rng) -> str:
    """A kvbench workload file whose gaps are the given tools' times, interleaved."""
    names = [t for t, x in tools.items() for _ in x]
    secs = [float(v) for x in tools.values() for v in x]
    order = rng.permutation(len(names))
    jobs = [JobSpec(job_id=i, arrival_s=float(i), first_prompt=(11,), tool_outputs=((12,),),
                    tool_s=(secs[k],), completion_tokens=1, tool_names=(names[k],))
            for i, k in enumerate(order)]  # fmt: skip
    path = tmp_path / "tools.parquet"
    io.save(Workload(jobs=jobs, jps=1.0, seed=0), path)
    return str(path)


def conf(dist, trace, fmt=None):
    return ToolTimeConf(dist=dist, trace=trace, trace_format=fmt)  # type: ignore[arg-type]


def test_fitted_recovers_known_lognormals(tmp_path):
    rng = np.random.default_rng(5)
    truth = {"Bash": (1.0, 0.8, 600), "Read": (-2.0, 0.5, 300)}
    path = tool_trace(tmp_path, {t: rng.lognormal(mu, sd, n) for t, (mu, sd, n) in truth.items()},
                      rng)  # fmt: skip
    f = tooltime.make(conf("fitted", path))
    for name, (mu, sd, _) in truth.items():
        got_mu, got_sd = f.params[f.names.index(name)]
        assert got_mu == pytest.approx(mu, abs=0.08) and got_sd == pytest.approx(sd, abs=0.06)
    secs, names = f.draw_tools(np.random.default_rng(1), 30000)
    names_a, secs_a = np.array(names), np.array(secs)
    assert (names_a == "Bash").mean() == pytest.approx(2 / 3, abs=0.01)  # call frequency
    bash = np.log(secs_a[names_a == "Bash"])
    assert (bash.mean(), bash.std()) == pytest.approx((1.0, 0.8), abs=0.08)
    assert f.describe()["tool_share"] == {"Bash": 0.6667, "Read": 0.3333}


def test_empirical_draws_a_tools_recorded_times_by_frequency(tmp_path):
    rng = np.random.default_rng(2)
    path = tool_trace(tmp_path, {"grep": np.array([0.1, 0.2, 0.3]), "pytest": np.array([30.0])},
                      rng)  # fmt: skip
    e = tooltime.make(conf("empirical", path))
    secs, names = e.draw_tools(np.random.default_rng(0), 20000)
    assert set(zip(names, secs, strict=True)) == {("grep", 0.1), ("grep", 0.2), ("grep", 0.3),
                                                  ("pytest", 30.0)}  # fmt: skip
    assert names.count("pytest") / len(names) == pytest.approx(0.25, abs=0.01)
    again = e.draw_tools(np.random.default_rng(0), 20000)
    assert again == (secs, names)  # deterministic from the generator


def test_a_rare_tool_keeps_its_scale_and_borrows_the_pooled_spread(tmp_path):
    rng = np.random.default_rng(3)
    common = rng.lognormal(0.0, 0.7, 400)
    path = tool_trace(tmp_path, {"common": common, "rare": np.array([0.01, 0.02, 0.04])}, rng)
    f = tooltime.make(conf("fitted", path))
    mu, sd = f.params[f.names.index("rare")]
    assert mu == pytest.approx(np.log([0.01, 0.02, 0.04]).mean())
    logs = [np.log(common), np.log([0.01, 0.02, 0.04])]
    assert sd == pytest.approx(tooltime.pooled_sigma(logs)) and sd == pytest.approx(0.7, abs=0.06)
    assert f.pooled == ["rare"] and f.describe()["tool_sigma_pooled"] == ["rare"]


@pytest.mark.parametrize("trace", [TRACELAB, LMCACHE])
def test_the_seed_job_with_a_traces_named_tools(trace):
    wl = OmegaConf.structured(WorkloadConf(name="t", n_jobs=40,
                                           tool=conf("empirical", trace)))  # fmt: skip
    w = agent.generate(wl, 3.0, VOCAB)
    named = {t for j in w.jobs for t in j.tool_names}
    assert all(j.n_turns == 8 and len(j.tool_names) == 7 for j in w.jobs)
    assert "user" not in named and "" not in named  # gaps waiting for a person are left out
    assert named <= set(w.summary()["tool_share"])
    assert w.jobs[0].tool_name(1) == w.jobs[0].tool_names[0] and w.jobs[0].tool_name(8) == ""
    again = agent.generate(wl, 3.0, VOCAB)
    assert again.digest() == w.digest()
    # the tokens and arrivals are the seed's job's: only the tool times and names differ
    seed = agent.generate(OmegaConf.structured(WorkloadConf(name="t", n_jobs=40)), 3.0, VOCAB)
    assert [j.first_prompt for j in w.jobs] == [j.first_prompt for j in seed.jobs]
    assert [j.arrival_s for j in w.jobs] == [j.arrival_s for j in seed.jobs]


def test_the_sample_tools_are_heavy_tailed():
    e = tooltime.make(conf("empirical", TRACELAB))
    times = dict(zip(e.names, e.samples, strict=True))
    assert max(times["Read"]) < 0.3 < 1 < min(times["WebSearch"]) < max(times["WebSearch"]) < 5
    assert max(times["shell"]) > 50 and np.median(times["shell"]) < 20


@pytest.mark.parametrize(
    "over, needle",
    [
        (["workload.tool.dist=empirical"],
         "workload.tool.trace=null: must name a trace file when workload.tool.dist=empirical"),
        (["workload.tool.dist=fitted", "workload.tool.trace=/nope.jsonl"],
         "workload.tool.trace=/nope.jsonl: no such file"),
        (["workload.tool.dist=gamma"],
         "expected one of [fixed, exponential, lognormal, file, empirical, fitted]"),
        (["workload=agent8_tracetools", "workload.tool.trace_format=lmcache_agentic"],
         f"workload.tool.trace={TRACELAB}: not a lmcache_agentic trace"),
        (["workload=agent8_tracetools", "workload.tool.trace_format=csv"],
         "expected one of [kvbench, lmcache_agentic, tracelab]"),
    ],
)  # fmt: skip
def test_planning_refuses_bad_tool_traces(tmp_path, over, needle):
    with pytest.raises(ConfigError) as e:
        plan.make([f"results_dir={tmp_path}", "policy=fcfs", "jps=1", *over], today="20260101")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_unreadable_and_toolless_traces_are_refused(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(WorkloadError, match=r"workload.tool.trace=.*bad.parquet: cannot read it"):
        tooltime.make(conf("empirical", str(bad)))
    plain = io.save(agent.generate(OmegaConf.structured(WorkloadConf(name="t", n_jobs=2)), 1.0,
                                   VOCAB), tmp_path / "plain.jsonl")  # fmt: skip
    with pytest.raises(WorkloadError, match="records no gap after a named tool call"):
        tooltime.make(conf("empirical", str(plain)))


def test_agent8_tracetools_plans_with_named_long_tail_tools(tmp_path):
    p = plan.make([f"results_dir={tmp_path}", "workload=agent8_tracetools", "policy=fcfs",
                   "jps=1"], today="20260101")  # fmt: skip
    (cfg,) = p.configs.values()
    w = workloads.build(cfg)
    s = w.summary()
    assert s["n_jobs"] == 150 and s["n_turns"] == 8 and s["tool_trace"] == TRACELAB
    names = [t for j in w.jobs for t in j.tool_names]
    assert {"shell", "Bash", "WebSearch", "Read"} <= set(names)
    secs = np.array([g for j in w.jobs for g in j.tool_s])
    assert secs.max() > 40 and np.median(secs) < 5  # a long tail, not a fixed 0.5 s


def test_max_s_caps_every_draw_and_keeps_the_names():
    """workload.tool.max_s: the same draws (same stream), each at most max_s; the tool names
    and every time under the cap unchanged."""
    wl = OmegaConf.structured(WorkloadConf(name="t", n_jobs=40, n_turns=6))
    wl.tool = OmegaConf.structured(conf("fitted", TRACELAB))
    free = agent.generate(wl, 1.0, VOCAB)
    wl.tool.max_s = 10.0
    capped = agent.generate(wl, 1.0, VOCAB)
    a = np.array([t for j in free.jobs for t in j.tool_s])
    b = np.array([t for j in capped.jobs for t in j.tool_s])
    assert a.max() > 10.0  # the sample's shell and Bash tails go past it
    assert np.array_equal(b, np.minimum(a, 10.0))
    assert [j.tool_names for j in free.jobs] == [j.tool_names for j in capped.jobs]
    assert tooltime.make(wl.tool).describe()["max_s"] == 10.0


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_a_bad_cap_is_refused_at_planning(bad):
    with pytest.raises(ConfigError, match="workload.tool.max_s"):
        ToolTimeConf(max_s=bad)
