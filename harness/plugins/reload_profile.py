"""Measure ``continuum_ttl``'s ``reload_s_per_token``: what re-prefilling a context costs.

Continuum's paper (§4.2) prices a lost pin by an offline prefill profile of the model on the
GPU. This is that profile, small: against an idle server of the cell's model and engine, send
prompts of fresh random token ids (no prefix can hit) of a few lengths with ``max_tokens=1``,
time each request, and fit ``time = a + b * tokens`` by least squares; ``b`` is the setting
(the paper fits a quadratic; at agent context lengths the linear term dominates)::

    python -m harness.plugins.reload_profile --url http://127.0.0.1:8000 \
        [--sizes 1024,2048,4096,8192] [--repeats 3]

It prints one JSON line: ``reload_s_per_token`` (b), ``intercept_s`` (a) and the samples.
Against a server started with an API key, export it as ``VLLM_API_KEY``: it is sent as
``Authorization: Bearer``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import urllib.request
from collections.abc import Sequence


def _auth() -> dict[str, str]:
    key = os.environ.get("VLLM_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **_auth()})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _model(url: str) -> str:
    req = urllib.request.Request(f"{url}/v1/models", headers=_auth())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["data"][0]["id"]


def fit(samples: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of seconds over tokens."""
    n = len(samples)
    mx = sum(x for x, _ in samples) / n
    my = sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    if sxx == 0:
        raise ValueError("need at least two different prompt lengths")
    slope = sum((x - mx) * (y - my) for x, y in samples) / sxx
    return my - slope * mx, slope


def profile(url: str, sizes: Sequence[int], repeats: int, seed: int = 0) -> dict:
    rng, model = random.Random(seed), _model(url)
    _post(url, {"model": model, "prompt": [rng.randrange(100, 30000) for _ in range(64)],
                "max_tokens": 1})  # warm-up, not counted
    samples = []
    for _ in range(repeats):
        for n in sizes:
            prompt = [rng.randrange(100, 30000) for _ in range(n)]
            t = time.perf_counter()
            _post(url, {"model": model, "prompt": prompt, "max_tokens": 1})
            samples.append((n, time.perf_counter() - t))
    a, b = fit(samples)
    return {"reload_s_per_token": b, "intercept_s": a,
            "samples": [[n, round(s, 4)] for n, s in samples]}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--sizes", default="1024,2048,4096,8192")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(profile(args.url, sizes, args.repeats)))


if __name__ == "__main__":
    main()
