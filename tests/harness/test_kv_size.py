"""The KV cache a cell's engine will allocate, reckoned at planning (``harness.kv_size``), and
the plan's warning for a write-through host tier smaller than it.

The reckoning is checked against what engines really allocated: the lent H200's start-up log
(``tests/fixtures/server_logs/``: 109.49 GiB, 896,912 tokens at 0.9), the H100 run of
2026-11-27 (11.4 GiB at 0.35, docs/validation/h200-20261129-seed.md), and the CPU engine's
own servers in tests/analysis/test_report_real_sweep.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import kv_size
from harness.errors import ConfigError
from harness.server import kv_cache_capacity
from launch import plan
from tests.harness.test_policies import cell_config

LOGS = Path(__file__).resolve().parents[1] / "fixtures/server_logs"
H200_LOG = LOGS / "h200_native_offload_dram100.log"


def llama(tmp_path, *over: str):
    return cell_config(tmp_path, "engine=vllm-cuda", "workload=agent8", *over)


def test_llama_8b_s_weights_and_kv_bytes_per_token(tmp_path):
    mc = kv_size.model_config(llama(tmp_path, "gpu=h200", "dram=64", "policy=fcfs"))
    assert mc is not None
    assert kv_size.bytes_per_token(mc) == 131_072  # 2 x 32 layers x 8 KV heads x 128 x bf16
    assert kv_size.weight_gib(mc) == pytest.approx(14.96, abs=0.01)  # vLLM: "took 15.0 GiB"


def test_the_h200_estimate_is_what_its_engine_allocated(tmp_path):
    real = kv_cache_capacity(H200_LOG.read_text())
    assert real == {"device": "GPU", "tokens": 896_912, "gib": 109.49}
    est = kv_size.estimate(llama(tmp_path, "gpu=h200", "dram=100", "policy=fcfs"))
    assert est is not None
    assert est.gib == pytest.approx(real["gib"], rel=0.005)
    assert est.tokens == pytest.approx(real["tokens"], rel=0.005)
    assert est.how.startswith("0.9 x 139.6 GiB of h200 - 15.0 GiB of weights")


def test_the_h100_estimate_at_a_third_of_its_memory(tmp_path):
    est = kv_size.estimate(llama(tmp_path, "gpu=h100", "dram=64", "policy=fcfs",
                                 "engine.gpu_memory_utilization=0.35"))
    assert est is not None and est.gib == pytest.approx(11.4, rel=0.02)


def test_no_estimate_for_a_model_of_another_shape(tmp_path):
    moe = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "intermediate_size": 14336, "vocab_size": 32000, "num_local_experts": 8}
    assert kv_size.weight_gib(moe) is None and kv_size.bytes_per_token(moe) is None
    assert kv_size.bytes_per_token({"hidden_size": 64}) is None  # not a decoder's config
    assert kv_size.bytes_per_token({**moe, "num_local_experts": 0,
                                    "torch_dtype": "float8_e4m3"}) is None  # unknown width
    gone = llama(tmp_path, "gpu=h200", "dram=64", "policy=fcfs")
    gone.model.path = str(tmp_path)  # a folder without config.json (planning refuses one)
    assert kv_size.model_config(gone) is None and kv_size.estimate(gone) is None


def _tier_lines(tmp_path, *over: str) -> list[str]:
    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "engine=vllm-cuda",
                   "workload=agent8", *over], today="20260101")
    return [w for w in p.warnings if w.startswith("host tier:")]


def test_the_plan_warns_of_a_tier_smaller_than_vram_s_kv_cache(tmp_path):
    """The seed's H200 row (dram=64): LMCache's and vLLM's offload tiers are smaller than the
    KV cache at 0.9, so the plan says so, once per policy, naming the cells."""
    lines = _tier_lines(tmp_path, "gpu=h200", "dram=64",
                        "policy=[fcfs,lmcache,native_offload,continuum_ttl]", "jps=[3,10]")
    assert len(lines) == 2, lines
    lm = next(w for w in lines if "policy=lmcache" in w)
    assert "its write-through host tier (64 GiB) is smaller than the KV cache (about 109.4 GiB:" \
        in lm
    assert "a dram above 109" in lm
    assert "gpu=h200/dram=64/policy=lmcache/sched=fcfs/jps=3" in lm and "jps=10" in lm
    assert not [w for w in lines if "fcfs:" in w or "continuum_ttl" in w]


@pytest.mark.parametrize("over", [
    ("gpu=h200", "dram=200", "policy=lmcache"),  # a tier larger than the KV cache
    ("gpu=h200", "dram=64", "policy=lmcache", "engine.gpu_memory_utilization=0.35"),  # 32.6 GiB
    ("gpu=h200", "dram=64", "policy=fcfs"),  # no host tier
])
def test_no_warning_where_the_tier_is_larger_or_absent(tmp_path, over):
    assert _tier_lines(tmp_path, *over, "jps=3") == []


def test_no_room_for_a_kv_cache_is_refused_at_planning(tmp_path):
    """The workstation's RTX 5090 (32 GB) at 0.4: 12.7 GiB for 15 GiB of weights."""
    with pytest.raises(ConfigError) as e:
        llama(tmp_path, "gpu=rtx5090", "dram=64", "policy=fcfs",
              "engine.gpu_memory_utilization=0.4")
    assert "engine.gpu_memory_utilization=0.4 on gpu=rtx5090 leaves no room for a KV cache " \
        "(0.4 x 31.7 GiB of rtx5090 - 15.0 GiB of weights" in str(e.value)
    assert "raise it to at least 0.64" in str(e.value)  # 4 GiB: one 32,768-token request


def test_a_kv_cache_smaller_than_one_request_is_warned(tmp_path):
    p = plan.make([f"results_dir={tmp_path}", "cluster=pace", "engine=vllm-cuda",
                   "workload=agent8", "gpu=l40s", "dram=64", "policy=fcfs", "jps=3",
                   "engine.gpu_memory_utilization=0.38"], today="20260101")
    (w,) = [w for w in p.warnings if w.startswith("KV cache:")]
    assert "about 14,7" in w and "fewer than one request of model.max_model_len=32768" in w
    assert "raise engine.gpu_memory_utilization to about 0.43" in w
    ok = plan.make([f"results_dir={tmp_path}", "cluster=pace", "engine=vllm-cuda",
                    "workload=agent8", "gpu=l40s", "dram=64", "policy=fcfs", "jps=3",
                    "engine.gpu_memory_utilization=0.4", "model.max_model_len=16384"],
                   today="20260101")  # 22K tokens of KV cache, longest request 14,304
    assert not [w for w in ok.warnings if w.startswith("KV cache:")]


def test_a_workload_longer_than_the_model_s_context_is_refused(tmp_path):
    """agent8's longest request: 14,304 tokens (job 149's turn 8 and its 20 output tokens)."""
    with pytest.raises(ConfigError) as e:
        llama(tmp_path, "gpu=h200", "dram=64", "policy=fcfs", "model.max_model_len=8192")
    assert "workload agent8: job 149's last turn needs 14,304 tokens (prompt and output), " \
        "more than model.max_model_len=8192 of model llama31_8b" in str(e.value)
    assert llama(tmp_path, "gpu=h200", "dram=64", "policy=fcfs", "model.max_model_len=14304")


@pytest.mark.parametrize("folder", ["llama31-8b", "tiny-llama"])
def test_the_weight_count_is_transformers_own(folder):
    """The parameter count behind ``weight_gib`` is the one of transformers' model built from
    the same config on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(__file__).resolve().parents[2] / "models" / folder
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    params = sum(p.numel() for p in model.parameters())
    mc = json.loads((path / "config.json").read_text())
    assert kv_size.weight_gib(mc) * kv_size.GIB == params * kv_size.dtype_bytes(mc)
