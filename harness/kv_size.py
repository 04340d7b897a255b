"""How large a cell's KV cache is, reckoned at planning from its configs, and what that means
for a write-through host tier.

LMCache and vLLM's own offload copy everything the engine computes to their host tier, and
both levels evict by recency; so a tier smaller than VRAM's KV cache holds a subset of what
VRAM holds and can serve almost nothing. On the H200 at ``gpu_memory_utilization=0.9`` VRAM's
KV cache was 109.5 GiB, larger than the 64 and 100 GiB tiers: LMCache held more than VRAM in
0 of 8,400 lookups (docs/validation/h200-20261129-seed.md). The cell reads the real size from
the engine's log at start (``harness.server.kv_cache_capacity``) and warns then; the plan
warns from :func:`estimate` before a GPU hour is spent.

The estimate is vLLM's own budget: ``gpu_memory_utilization`` x the memory the driver shows,
less the weights and the rest (peak activation at ``max_num_batched_tokens`` and memory
outside torch), in tokens at the model's KV bytes per token. For Llama-3.1-8B it gives
109.37 GiB, 895,987 tokens on the H200 at 0.9 (vLLM allocated 109.49 GiB, 896,912 tokens:
139.8 GiB x 0.9 - 15.0 - 1.1 - 0.22), 11.46 GiB on the H100 at 0.35 (11.4 in that run), and
on the CPU engine exactly ``engine.kv_cache_space_gb``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.policies.common import GIB

# GiB the driver shows per nominal GB of the card: H100 80 GB -> 79.2 GiB, H200 141 -> 139.8
# (both seen). The L40S shows ~45 GiB of its 48 GB (ECC GDDR6): there the reckoning overstates
# the KV cache by up to ~2.5 GiB x gpu_memory_utilization, on the lenient side.
VISIBLE_GIB_PER_GB = 0.99
# what vLLM keeps beside weights and KV: peak activation at max_num_batched_tokens 8192 plus
# memory outside torch; 1.1 + 0.22 GiB for Llama-3.1-8B on the H200 (its start-up log)
OTHER_GIB = 1.3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
# a config naming experts is a mixture of experts: its weights are not counted here
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
# why such a tier is a problem, as every warning of it says (plan, cell, report)
WHY_SMALL_TIER = ("a tier that copies everything the engine computes, smaller than VRAM's KV "
                  "cache, holds a subset of it under recency eviction and can serve almost "
                  "nothing")


@dataclass(frozen=True)
class KVSize:
    gib: float  # <= 0: no room left for a KV cache
    tokens: int  # 0 when there is no room
    how: str  # how it was reckoned, for the warning
    bytes_per_token: int
    fixed_gib: float = 0.0  # weights and the rest, taken before the KV cache (CUDA)
    shown_gib: float = 0.0  # the memory the driver shows (CUDA)

    def utilization_for(self, tokens: int) -> float | None:
        """The gpu_memory_utilization at which the KV cache holds ``tokens`` (CUDA); None
        where no share of this GPU does (or on the CPU engine)."""
        if not self.shown_gib:
            return None
        share = (self.fixed_gib + tokens * self.bytes_per_token / GIB) / self.shown_gib
        return share if share < 1 else None


def model_config(cfg) -> dict[str, Any] | None:
    """The model folder's ``config.json`` (Hugging Face), or None where it cannot be read."""
    from harness.server import model_path

    try:
        return json.loads((Path(model_path(cfg)) / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _shape(mc: dict[str, Any]) -> tuple[int, int, int, int, int, int, int, bool] | None:
    """hidden, layers, heads, KV heads, head dim, intermediate, vocabulary, tied embeddings:
    of a dense decoder-only transformer, else None."""
    try:
        h, layers, heads = int(mc["hidden_size"]), int(mc["num_hidden_layers"]), \
            int(mc["num_attention_heads"])  # fmt: skip
        kv_heads = int(mc.get("num_key_value_heads") or heads)
        head_dim = int(mc.get("head_dim") or h // heads)
        inter, vocab = int(mc["intermediate_size"]), int(mc["vocab_size"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if any(mc.get(k) for k in MOE_KEYS):
        return None
    return h, layers, heads, kv_heads, head_dim, inter, vocab, bool(mc.get("tie_word_embeddings"))


def dtype_bytes(mc: dict[str, Any]) -> int | None:
    return DTYPE_BYTES.get(str(mc.get("torch_dtype") or mc.get("dtype") or "bfloat16"))


def bytes_per_token(mc: dict[str, Any]) -> int | None:
    """KV bytes of one token: K and V of every layer (131,072 for Llama-3.1-8B in bf16)."""
    shape, width = _shape(mc), dtype_bytes(mc)
    if shape is None or width is None:
        return None
    _, layers, _, kv_heads, head_dim, *_ = shape
    return 2 * layers * kv_heads * head_dim * width


def weight_gib(mc: dict[str, Any]) -> float | None:
    """GiB of the weights (attention, gated MLP, norms, embeddings; 14.96 for Llama-3.1-8B)."""
    shape, width = _shape(mc), dtype_bytes(mc)
    if shape is None or width is None:
        return None
    h, layers, heads, kv_heads, head_dim, inter, vocab, tied = shape
    layer = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim + 3 * h * inter + 2 * h
    params = layers * layer + vocab * h * (1 if tied else 2) + h
    return params * width / GIB


def estimate(cfg) -> KVSize | None:
    """The KV cache the cell's engine will allocate, or None where it cannot be reckoned (a
    model of another shape, a CPU engine left at vLLM's default size). Its ``gib`` is <= 0
    where the weights and the rest take all that ``gpu_memory_utilization`` gives."""
    mc = model_config(cfg)
    per_token = bytes_per_token(mc) if mc else None
    if mc is None or per_token is None:
        return None
    if str(cfg.engine.device) == "cpu":
        if cfg.engine.kv_cache_space_gb is None:
            return None
        gib = float(cfg.engine.kv_cache_space_gb)
        return KVSize(gib, int(gib * GIB // per_token), f"engine.kv_cache_space_gb={gib:g}",
                      per_token)
    weights = weight_gib(mc)
    if weights is None:
        return None
    gmu, shown = float(cfg.engine.gpu_memory_utilization), \
        float(cfg.gpu.vram_gb) * VISIBLE_GIB_PER_GB  # fmt: skip
    gib = gmu * shown - weights - OTHER_GIB
    how = (f"{gmu:g} x {shown:.1f} GiB of {cfg.gpu.name} - {weights:.1f} GiB of weights - "
           f"~{OTHER_GIB:g} GiB of activations")  # fmt: skip
    return KVSize(gib, max(0, int(gib * GIB // per_token)), how, per_token,
                  weights + OTHER_GIB, shown)


def small_tier(tier_gib: float, kv_gib: float, how: str = "") -> str:
    """Why a write-through tier of ``tier_gib`` beside a KV cache of ``kv_gib`` is a problem,
    and what tests offload instead (the cell's and the plan's warning say it alike; ``how``:
    how an estimated size was reckoned)."""
    size = f"about {kv_gib:.1f} GiB: {how}" if how else f"{kv_gib:.1f} GiB"
    return (f"its write-through host tier ({tier_gib:g} GiB) is smaller than the KV cache "
            f"({size}): {WHY_SMALL_TIER}; a dram above {kv_gib:.0f} (or a smaller "
            f"engine.gpu_memory_utilization) tests offload")
