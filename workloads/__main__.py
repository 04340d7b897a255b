"""``python -m workloads write --out FILE [overrides ...]``: write the jobs one cell would send
(parquet or JSONL by the suffix), to inspect or replay them (``workload.trace=FILE``)."""

from __future__ import annotations

import argparse
import sys

from harness.cell import load_workload
from harness.errors import ConfigError
from launch import plan
from workloads import io


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads")
    sub = ap.add_subparsers(dest="verb", required=True)
    w = sub.add_parser("write", help="write one cell's workload to a file")
    w.add_argument("--out", required=True, help="file.parquet or file.jsonl")
    w.add_argument("overrides", nargs="*", help="Hydra overrides selecting one cell (jps=3 ...)")
    a = ap.parse_args(argv)
    try:
        p = plan.make(a.overrides)
        if len(p.cells) != 1:
            raise ConfigError(f"the overrides give {len(p.cells)} cells; select one (e.g. jps=3 policy=fcfs)")
        wl = load_workload(p.configs[p.cells[0]])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = io.save(wl, a.out)
    s = wl.summary()
    print(f"{path}: {s['n_jobs']} jobs, {s['n_turns']} turns, seed {s['seed']}, jps {s['jps']:g}, "
          f"{s['prompt_tokens_total']} prompt tokens, digest {s['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
