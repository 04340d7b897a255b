"""``python -m workloads TRACE [--format F]``: what a trace holds, as JSON: its sessions,
requests and prompt sizes, and per tool its gaps (calls, median, p90, max, and the share of
the tool's time spent in its slowest 10% of calls). Writing a cell's jobs, trace or not, is
``python -m launch workload --out FILE [overrides ...]``."""

from __future__ import annotations

import argparse
import json
import sys

from workloads import traces
from workloads.errors import WorkloadError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads", description=__doc__)
    ap.add_argument("trace", help="a trace file, or a folder of its shards")
    ap.add_argument("--format", choices=list(traces.FORMATS), default=None,
                    help="the trace's format (default: detected from the file)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        fmt, found = traces.sessions(f"trace={args.trace}", "--format", args.trace, args.format)
    except WorkloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"trace": args.trace, "format": fmt.name, **traces.summarize(found)},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
