"""The plugins' host-tier copies on a GPU: bandwidth, CPU cost to issue, overlap with compute.

    python bench/host_tier_copy.py                   # Llama-3.1-8B KV shape, 16K-token job
    python bench/host_tier_copy.py --tokens 4096 --repeat 5

What it runs: ``harness.plugins.host_tier.HostTier`` (the worker code of ``predictive_prefetch``
and ``continuum_ttl``) on a paged KV cache shaped like vLLM's FlashAttention layout for
Llama-3.1-8B (32 layers of ``(2, blocks, 16, 8, 128)`` bf16: 128 KiB per token), with a pinned
host tier. One job's blocks (scattered over the device cache, consecutive host slots) are
offloaded in one step and brought back into other device blocks in a later step.

What it prints, per direction: GB/s from the first copy to the step's event; the CPU time of
``HostTier.step`` (what the engine's step loop pays: the copies are asynchronous); and the
time of a fixed matmul workload on the compute stream alone and while the copies run (the
overlap the side stream buys). Then it checks the round trip bit for bit.

Needs a CUDA GPU (the device tool's machines); exits 2 without one.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.plugins.host_tier import HostTier  # noqa: E402

LAYERS, BLOCK, HEADS, DIM = 32, 16, 8, 128


def _compute(a: torch.Tensor, n: int) -> None:
    for _ in range(n):
        a = torch.tanh(a @ a)


def _timed_compute(a: torch.Tensor, n: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    _compute(a, n)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=16384, help="tokens of the job moved")
    ap.add_argument("--device-blocks", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--matmuls", type=int, default=40)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU machine")
        return 2
    dev = torch.device("cuda")
    nb = args.tokens // BLOCK
    shape = (2, args.device_blocks, BLOCK, HEADS, DIM)
    kv = {f"model.layers.{i}.self_attn": torch.randn(shape, dtype=torch.bfloat16, device=dev)
          for i in range(LAYERS)}
    tier = HostTier(kv, args.device_blocks)
    tier.timing = True
    t = time.perf_counter()
    tier.ensure(nb)
    pin_s = time.perf_counter() - t
    nbytes = nb * LAYERS * 2 * BLOCK * HEADS * DIM * 2
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; job {args.tokens} tokens"
          f" = {nb} blocks = {nbytes / 1e9:.2f} GB; host tier pinned in {pin_s:.2f} s")
    a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16) / 64
    _timed_compute(a, 3)
    alone = min(_timed_compute(a, args.matmuls) for _ in range(3))
    rng = random.Random(0)
    step = 0
    print(f"{'direction':<10} {'GB/s':>7} {'issue_ms (CPU)':>15} {'compute alone ms':>17} "
          f"{'compute+copy ms':>16}")
    for r in range(args.repeat):
        src = rng.sample(range(args.device_blocks), nb)
        dst = rng.sample([b for b in range(args.device_blocks) if b not in set(src)], nb)
        ref = {n: t_[:, src].clone() for n, t_ in kv.items()}
        for direction in ("offload", "prefetch"):
            pairs = ([(d, h) for h, d in enumerate(src)] if direction == "offload"
                     else [(h, d) for h, d in enumerate(dst)])
            torch.cuda.synchronize()
            step += 2
            start = torch.cuda.Event(enable_timing=True)
            start.record(tier.stream)
            c0 = time.perf_counter()
            if direction == "offload":  # as in an engine step: copies, then the forward
                tier.step(step, to_host=pairs, to_dev=())
            else:
                tier.step(step, to_host=(), to_dev=pairs)
            issue = time.perf_counter() - c0
            end = tier.pending[-1][1]
            _compute(a, args.matmuls)
            torch.cuda.synchronize()
            both = time.perf_counter() - c0
            copy_s = start.elapsed_time(end) / 1e3
            print(f"{direction:<10} {nbytes / copy_s / 1e9:7.1f} {issue * 1e3:15.2f} "
                  f"{alone * 1e3:17.1f} {both * 1e3:16.1f}")
            tier.step(step + 2, (), ())  # the compute stream waits for the copies
        for n, t_ in kv.items():
            if not torch.equal(t_[:, dst], ref[n]):
                print(f"round trip MISMATCH in {n} (repeat {r})")
                return 1
    print(f"round trip: {args.repeat} x {nb} blocks x {LAYERS} layers identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
