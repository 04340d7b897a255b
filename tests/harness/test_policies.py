"""The policy catalogue (fcfs, native_offload, lmcache, continuum, and our plugins
continuum_ttl and predictive_prefetch): the exact server command each one produces for a
gpu/dram (golden files), capacities that follow ``dram``, bad input refused at planning, and
the Continuum fork's tool-name shim. No GPU, no server.

Regenerate the golden files after an intended change with
``KVBENCH_UPDATE_GOLDEN=1 python -m pytest tests/harness/test_policies.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.policies import continuum, lmcache, native_offload
from harness.server import Server, build_command
from launch import plan
from tests.conftest import make_fork_standin

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
POLICIES = ["fcfs", "native_offload", "lmcache", "continuum"]
GOLDEN_POLICIES = [*POLICIES, "continuum_ttl", "predictive_prefetch"]
GPU_DRAM = [("h100", 400), ("a100", 200)]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The command must not depend on this shell: no inherited PYTHONPATH, no fork env."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("KVBENCH_CONTINUUM_PYTHON", raising=False)


@pytest.fixture(scope="session")
def fork_env(tmp_path_factory) -> str:
    """A stand-in for the Continuum fork's environment: an interpreter whose ``vllm`` package
    has ``v1/core/estimate_with_func.py`` (all the planning check looks for)."""
    return make_fork_standin(tmp_path_factory.mktemp("fork-env"))


@pytest.fixture
def fork_python(fork_env, monkeypatch) -> str:
    monkeypatch.setenv("KVBENCH_CONTINUUM_PYTHON", fork_env)
    return fork_env


def cell_config(tmp_path, *over: str):
    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "jps=3", *over], today="20260101")
    assert len(p.cells) == 1
    return p.configs[p.cells[0]]


def normalised(cfg, cmd, fork: str | None) -> dict:
    """argv, env and files with this machine's paths replaced by placeholders."""

    def norm(text: str) -> str:
        if fork:
            text = text.replace(fork, "<FORK_PYTHON>")
        return text.replace(sys.executable, "<PYTHON>").replace(str(REPO), "<REPO>")

    return {
        "cell": {"gpu": cfg.gpu.name, "dram": int(cfg.dram.gb), "policy": cfg.policy.name,
                 "sched": str(cfg.sched)},
        "argv": [norm(a) for a in cmd.argv],
        "env": {k: norm(v) for k, v in sorted(cmd.env.items())},
        "files": {k: norm(v) for k, v in sorted(cmd.policy_files.items())},
    }


_PLANS: dict[tuple[str, int], dict] = {}


def golden_configs(tmp_path_factory, gpu: str, dram: int) -> dict:
    """policy -> config of the h100/a100 cells, planned once for all the policies."""
    if (gpu, dram) not in _PLANS:
        p = plan.make([f"results_dir={tmp_path_factory.mktemp('plan')}", "cluster=pace", "jps=3",
                       f"gpu={gpu}", f"dram={dram}", f"policy=[{','.join(GOLDEN_POLICIES)}]"],
                      today="20260101")  # fmt: skip
        _PLANS[gpu, dram] = {c.policy: cfg for c, cfg in p.configs.items()}
    return _PLANS[gpu, dram]


@pytest.mark.parametrize("gpu, dram", GPU_DRAM)
@pytest.mark.parametrize("policy", GOLDEN_POLICIES)
def test_golden_command(tmp_path_factory, fork_python, policy, gpu, dram):
    cfg = golden_configs(tmp_path_factory, gpu, dram)[policy]
    got = normalised(cfg, build_command(cfg, "127.0.0.1", 8000), fork_python)
    path = GOLDEN / f"{policy}_{gpu}_dram{dram}.json"
    if os.environ.get("KVBENCH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(path.read_text())
    assert got == want, f"{path.name} differs (KVBENCH_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("policy, sched", [("fcfs", "program"), ("native_offload", "program"),
                                           ("continuum_ttl", "fcfs")])
def test_golden_command_other_sched(tmp_path, fork_python, policy, sched):
    """The scheduling order is a server flag: sched=program adds --scheduling-policy priority
    to any mainline policy; continuum_ttl with sched=fcfs is the pin-only ablation."""
    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "jps=3", "gpu=h100", "dram=400",
                   f"policy={policy}", f"sched={sched}"], today="20260101")
    cfg = p.configs[p.cells[0]]
    got = normalised(cfg, build_command(cfg, "127.0.0.1", 8000), fork_python)
    path = GOLDEN / f"{policy}_sched-{sched}_h100_dram400.json"
    if os.environ.get("KVBENCH_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(path.read_text())
    assert got == want, f"{path.name} differs (KVBENCH_UPDATE_GOLDEN=1 rewrites it)"
    has_flag = "--scheduling-policy" in got["argv"]
    assert has_flag == (sched == "program")
    if has_flag:
        assert got["argv"][got["argv"].index("--scheduling-policy") + 1] == "priority"


def test_the_fork_refuses_program_order(tmp_path):
    with pytest.raises(ConfigError, match=r"policy=continuum cannot run with sched=program.*"
                                          r"allowed: fcfs"):
        plan.make([f"results_dir={tmp_path}", "cluster=pace", "gpu=h100", "dram=400",
                   "policy=continuum", "sched=program"])


def test_an_unknown_sched_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"sched=prog is unknown; allowed: fcfs, program"):
        plan.make([f"results_dir={tmp_path}", "sched=prog"])


def test_each_policy_has_its_default_sched(tmp_path):
    p = plan.make([f"results_dir={tmp_path}", "policy=[fcfs,continuum_ttl]", "jps=1"])
    assert {c.policy: c.sched for c in p.cells} == {"fcfs": "fcfs", "continuum_ttl": "program"}
    both = plan.make([f"results_dir={tmp_path}", "policy=[fcfs]", "sched=[fcfs,program]",
                      "jps=1", "experiment.name=both"])
    assert [c.sched for c in both.cells] == ["fcfs", "program"]
    assert both.configs[both.cells[1]].sched == "program"


def test_golden_files_agree_with_the_source_of_the_flags():
    """What the golden files pin, said plainly (so a regenerated file cannot drift silently)."""
    g = json.loads((GOLDEN / "native_offload_h100_dram400.json").read_text())
    conf = json.loads(g["argv"][g["argv"].index("--kv-transfer-config") + 1])
    assert conf == {
        "kv_connector": "OffloadingConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"cpu_bytes_to_use": 400 * 2**30, "eviction_policy": "lru"},
    }
    g = json.loads((GOLDEN / "lmcache_a100_dram200.json").read_text())
    assert g["env"]["LMCACHE_CONFIG_FILE"] == "lmcache.yaml"
    file = yaml.safe_load(g["files"]["lmcache.yaml"])
    assert file == {"chunk_size": 256, "local_cpu": True, "max_local_cpu_size": 200}
    g = json.loads((GOLDEN / "continuum_h100_dram400.json").read_text())
    assert g["argv"][0] == "<FORK_PYTHON>"
    assert g["argv"][-2:] == ["--scheduling-policy", "continuum"]
    assert g["env"]["PYTHONPATH"] == "<REPO>/harness/policies/continuum_site"
    g = json.loads((GOLDEN / "predictive_prefetch_h100_dram400.json").read_text())
    conf = json.loads(g["argv"][g["argv"].index("--kv-transfer-config") + 1])
    assert conf["kv_connector_module_path"] == "harness.plugins.predictive_prefetch"
    extra = conf["kv_connector_extra_config"]  # every setting: the dataclass's defaults, filled
    assert extra["lead_s"] == 0.2 and extra["host_tier_gb"] == 400.0 and extra["stats_dir"] == "."
    assert g["env"]["KVBENCH_PLUGIN_STATS_DIR"] == "."
    shared = {"--max-num-batched-tokens": "8192", "--max-num-seqs": "256",
              "--gpu-memory-utilization": "0.9"}  # fmt: skip
    for name in GOLDEN_POLICIES:  # the scheduler settings are the same for every policy
        argv = json.loads((GOLDEN / f"{name}_h100_dram400.json").read_text())["argv"]
        assert {f: argv[argv.index(f) + 1] for f in shared} == shared, name


def tier_sizes(tmp_path, *over: str) -> dict[int, tuple[int, float]]:
    """dram -> (native_offload's cpu_bytes_to_use, lmcache's max_local_cpu_size)."""
    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "gpu=h100", "jps=3",
                   "policy=[native_offload,lmcache]", *over], today="20260101")  # fmt: skip
    out: dict[int, list] = {}
    for cell, cfg in p.configs.items():
        if cell.policy == "native_offload":
            conf = native_offload.transfer_config(cfg)
            out.setdefault(cell.dram, [0, 0])[0] = conf["kv_connector_extra_config"][
                "cpu_bytes_to_use"
            ]
        else:
            out.setdefault(cell.dram, [0, 0])[1] = yaml.safe_load(lmcache.config_text(cfg))[
                "max_local_cpu_size"
            ]
    return {d: (v[0], v[1]) for d, v in out.items()}


def test_capacity_follows_dram(tmp_path):
    sizes = tier_sizes(tmp_path, "dram=[64,100,200,400]")
    assert sizes == {d: (d * 2**30, d) for d in (64, 100, 200, 400)}
    assert len(set(sizes.values())) == 4, "every dram gives another tier"


def test_the_override_sets_the_tier_within_dram(tmp_path):
    assert tier_sizes(tmp_path, "dram=64", "++policy.settings.offload_gb=32") == {
        64: (32 * 2**30, 32)
    }
    half = tier_sizes(tmp_path, "dram=64", "++policy.settings.offload_gb=12.5")
    assert half == {64: (int(12.5 * 2**30), 12.5)}


def test_settings_reach_the_connector(tmp_path):
    h100 = ("gpu=h100", "dram=64")
    cfg = cell_config(tmp_path, *h100, "policy=native_offload",
                      "++policy.settings.eviction_policy=arc",
                      "++policy.settings.extra_config.store_threshold=2")  # fmt: skip
    extra = native_offload.transfer_config(cfg)["kv_connector_extra_config"]
    assert extra == {"cpu_bytes_to_use": 64 * 2**30, "eviction_policy": "arc", "store_threshold": 2}
    cfg = cell_config(tmp_path, *h100, "policy=native_offload",
                      "++policy.settings.connector=SimpleCPUOffloadConnector")  # fmt: skip
    conf = native_offload.transfer_config(cfg)
    assert conf["kv_connector"] == "SimpleCPUOffloadConnector"
    assert conf["kv_connector_extra_config"] == {"cpu_bytes_to_use": 64 * 2**30}
    cfg = cell_config(tmp_path, *h100, "policy=lmcache", "++policy.settings.chunk_size=512",
                      "++policy.settings.config.save_unfull_chunk=true")  # fmt: skip
    assert lmcache.lmcache_config(cfg) == {
        "chunk_size": 512, "local_cpu": True, "max_local_cpu_size": 64, "save_unfull_chunk": True,
    }  # fmt: skip


GPU = ["cluster=pace", "gpu=h100", "dram=64"]
S = "++policy.settings"
BAD = [
    (["policy=native_offload"],
     "policy=native_offload runs on engine vllm-cuda, not engine=vllm-cpu "
     "(vLLM's OffloadingConnector refuses the CPU backend); choose engine=vllm-cuda"),
    (["policy=lmcache"],
     "policy=lmcache runs on engine vllm-cuda, not engine=vllm-cpu (LMCache's connector"),
    (["policy=continuum"],
     "policy=continuum runs on engine vllm-cuda, not engine=vllm-cpu (the fork is a CUDA"),
    (["cluster=pace", "gpu=h100", "dram=400", "policy=native_offload", f"{S}.offload_gb=500"],
     "policy.settings.offload_gb=500 is larger than dram=400 (the offload tier's budget, "
     "dram.gb); lower"),
    (["cluster=pace", "gpu=a100", "dram=200", "policy=lmcache", f"{S}.offload_gb=201"],
     "policy.settings.offload_gb=201 is larger than dram=200"),
    ([*GPU, "policy=lmcache", f"{S}.offload_gb=0"],
     "policy.settings.offload_gb=0 is not a positive number of GiB"),
    ([*GPU, "policy=native_offload", f"{S}.offload_gib=3"],
     "policy.settings.offload_gib is unknown for policy=native_offload; known: connector, "
     "eviction_policy"),
    ([*GPU, "policy=native_offload", f"{S}.connector=Simple"],
     "policy.settings.connector=Simple is not allowed for policy=native_offload; allowed: "
     "OffloadingConnector, SimpleCPUOffloadConnector"),
    ([*GPU, "policy=native_offload", f"{S}.eviction_policy=fifo"],
     "policy.settings.eviction_policy=fifo is not allowed"),
    ([*GPU, "policy=native_offload", f"{S}.extra_config.cpu_bytes_to_use=1"],
     "policy.settings.extra_config.cpu_bytes_to_use is set by kvbench from dram / "
     "policy.settings.offload_gb"),
    ([*GPU, "policy=lmcache", f"{S}.config.max_local_cpu_size=9"],
     "policy.settings.config.max_local_cpu_size is set by kvbench"),
    ([*GPU, "policy=lmcache", "+policy.env.LMCACHE_MAX_LOCAL_CPU_SIZE=9"],
     "policy.env.LMCACHE_MAX_LOCAL_CPU_SIZE would override kvbench's LMCache config file"),
    ([*GPU, "policy=lmcache", f"{S}.chunk_size=-1"],
     "policy.settings.chunk_size=-1 must be a positive whole number of tokens"),
    ([*GPU, "policy=continuum"],
     "policy.settings.python is unset: policy=continuum runs the Continuum fork"),
    ([*GPU, "policy=continuum", f"{S}.python=/nope/bin/python"],
     "policy.settings.python=/nope/bin/python does not exist; build it as "
     "docs/policies/continuum.md says"),
    ([*GPU, "policy=continuum", f"{S}.python={REPO}"], "is not an executable file"),
    ([*GPU, "policy=continuum", f"{S}.python={sys.executable}"],
     "that is not the Continuum fork (no v1/core/estimate_with_func.py)"),
    ([*GPU, "policy=continuum", "+policy.env.PYTHONPATH=/x"],
     "policy.env.PYTHONPATH is set by policy=continuum"),
]  # fmt: skip


@pytest.mark.parametrize("over, needle", BAD)
def test_bad_input_fails_at_planning(tmp_path, over, needle):
    with pytest.raises(ConfigError) as e:
        plan.make([f"results_dir={tmp_path}", *over], today="20260101")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_missing_fork_env_from_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("KVBENCH_CONTINUUM_PYTHON", str(tmp_path / "gone" / "python"))
    with pytest.raises(ConfigError, match=r"policy.settings.python=.*/gone/python does not exist"):
        cell_config(tmp_path, "gpu=h100", "dram=64", "policy=continuum")


@pytest.mark.parametrize("bad", ["two words", "''"])
def test_continuum_default_tool_must_be_one_word(tmp_path, fork_python, bad):
    with pytest.raises(ConfigError, match="policy.settings.default_tool=.* must be one word"):
        cell_config(
            tmp_path,
            "gpu=h100",
            "dram=64",
            "policy=continuum",
            f"++policy.settings.default_tool={bad}",
        )


def test_continuum_runs_the_fork_interpreter_with_its_fields(tmp_path, fork_python):
    cfg = cell_config(tmp_path, "gpu=h100", "dram=64", "policy=continuum")
    cmd = build_command(cfg)
    assert cmd.argv[0] == fork_python and cmd.argv[1:3] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]
    assert cfg.policy.continuum_fields is True
    assert cmd.env["KVBENCH_CONTINUUM_TOOL"] == "tool"
    cfg = cell_config(
        tmp_path, "gpu=h100", "dram=64", "policy=continuum", "++policy.settings.default_tool=null"
    )
    assert "KVBENCH_CONTINUUM_TOOL" not in build_command(cfg).env


@pytest.mark.parametrize("policy", POLICIES)
def test_no_secret_in_the_command(tmp_path, fork_python, policy):
    cfg = cell_config(tmp_path, "gpu=h100", "dram=400", f"policy={policy}")
    srv = Server(cfg, tmp_path / "cell" / "server.log")
    text = json.dumps(
        {"argv": srv.command.argv, "env": srv.command.env, "files": srv.command.policy_files}
    )
    assert srv.api_key not in text
    assert "VLLM_API_KEY" not in srv.command.env
    assert not [
        k
        for k in srv.command.env
        if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
    ]


def run_server_stub(server: Server, code: str) -> str:
    """Start ``server`` with its own cwd, env and files, but ``python -c code`` as the program."""
    server.command.argv = [sys.executable, "-c", code]
    server.log_path.parent.mkdir(parents=True, exist_ok=True)  # the cell creates its folder first
    server.start()
    deadline = time.monotonic() + 60
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.proc is not None and server.proc.returncode == 0, server.log_path.read_text()
    server.proc = None
    return server.log_path.read_text()


def test_lmcache_config_file_is_found_by_the_server(tmp_path):
    """files() land in the server's working directory, where the relative
    LMCACHE_CONFIG_FILE of server_env points (the cell folder is not known to server_env)."""
    cfg = cell_config(tmp_path, "gpu=h100", "dram=100", "policy=lmcache")
    code = "import os; print(open(os.environ['LMCACHE_CONFIG_FILE']).read())"
    out = run_server_stub(Server(cfg, tmp_path / "cell" / "server.log"), code)
    assert "max_local_cpu_size: 100" in out and (tmp_path / "cell" / "lmcache.yaml").is_file()


# A stand-in for the fork's estimator, written for this test: what matters is that its
# request_finished overwrites this_func_call from the (absent) output text, as the fork does.
FAKE_ESTIMATOR = """
class ToolCallEstimator:
    def __init__(self, parsed=None):
        self.parsed, self.job_to_history = parsed, {}
    def request_finished(self, request):
        request.this_func_call = self.parsed
        self.job_to_history.setdefault(request.job_id, []).append({"func_call": self.parsed})
    def set_up_pin(self, request):
        return 0 if request.this_func_call is None else 2.0
"""

DRIVE = """
import json
from types import SimpleNamespace as NS
from vllm.v1.core.estimate_with_func import ToolCallEstimator as E
def finish(parsed=None, sent=None, xargs=None):
    e, r = E(parsed), NS(job_id="7", this_func_call=sent, sampling_params=NS(extra_args=xargs))
    e.request_finished(r)
    return [r.this_func_call, e.job_to_history["7"][-1]["func_call"], e.set_up_pin(r)]
got = [finish(), finish(parsed="git"), finish(sent="ls"), finish(xargs={"kvb_tool": "grep"})]
print(json.dumps(got))
"""


def fake_fork(tmp_path, estimator: str) -> Path:
    root = tmp_path / "fake-fork"
    core = root / "vllm" / "v1" / "core"
    core.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "v1", core):
        (d / "__init__.py").write_text("")
    (core / "estimate_with_func.py").write_text(textwrap.dedent(estimator))
    return root


def run_with_shim(tmp_path, estimator: str, tool: str | None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(continuum.SHIM_DIR), str(fake_fork(tmp_path, estimator))]
        ),
    }
    env.pop("KVBENCH_CONTINUUM_TOOL", None)
    if tool:
        env["KVBENCH_CONTINUUM_TOOL"] = tool
    return subprocess.run(
        [sys.executable, "-c", DRIVE], capture_output=True, text=True, env=env, timeout=60
    )


def test_shim_names_the_tool_when_the_output_does_not(tmp_path):
    r = run_with_shim(tmp_path, FAKE_ESTIMATOR, "tool")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        ["tool", "tool", 2.0],  # no name anywhere: the default, and the fork's rule pins
        ["git", "git", 2.0],  # the fork parsed a name: kept
        ["ls", "ls", 2.0],  # the client's this_func_call, which the fork alone would drop
        ["grep", "grep", 2.0],  # kvbench's kvb_tool hint in vllm_xargs
    ]
    assert "kvbench continuum shim: tool-name fallback active" in r.stderr


def test_shim_without_default_keeps_the_public_behaviour(tmp_path):
    r = run_with_shim(tmp_path, FAKE_ESTIMATOR, None)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0] == [None, None, 0]


def test_shim_refuses_an_estimator_it_does_not_know(tmp_path):
    r = run_with_shim(tmp_path, "class Other:\n    pass\n", "tool")
    assert r.returncode != 0
    assert "this environment is not the Hanchenli/vllm-continuum fork" in r.stderr


def test_shim_is_loaded_by_the_continuum_server_environment(tmp_path, fork_python):
    """The server's PYTHONPATH makes Python import the shim as sitecustomize at start."""
    cfg = cell_config(tmp_path, "gpu=h100", "dram=64", "policy=continuum")
    code = (
        "import sys, sitecustomize; print(sitecustomize.__file__); "
        "print(any(type(f).__name__ == 'PatchOnImport' for f in sys.meta_path))"
    )
    out = run_server_stub(Server(cfg, tmp_path / "cell" / "server.log"), code)
    assert str(continuum.SHIM_DIR / "sitecustomize.py") in out and "True" in out
