"""python -m analysis {report,compare,cells} ... (see docs/analysis.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from analysis import celltable, compare, pipeline, report
from analysis.load import SweepError
from analysis.stats import Window

log = logging.getLogger(__name__)


def _stats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", nargs=2, type=float, metavar=("HEAD", "TAIL"), default=(0, 0),
                   help="drop the first HEAD and last TAIL fraction of each cell's jobs by "
                        "arrival (ramp-up, drain), e.g. --window 0.1 0.1; default: all jobs")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples over jobs for the CIs (0: none); default 1000")
    p.add_argument("--level", type=float, default=0.95, help="CI level; default 0.95")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    p.add_argument("--max-failed-frac", type=float, default=0.0, metavar="F",
                   help="fraction of a cell's jobs that may fail before it is invalid "
                        "(default 0: any failed job invalidates the cell's JCT)")
    p.add_argument("--reference", type=Path, help="reference CSV (default: the seed's, "
                                                  "analysis/reference.csv)")
    p.add_argument("--vs", default="continuum", metavar="POLICY",
                   help="policy the tables compare against (default continuum)")
    p.add_argument("--out", type=Path, help="output folder (default reports/<sweep names>)")


def _options(a: argparse.Namespace) -> pipeline.Options:
    return pipeline.Options(window=Window(*a.window), n_boot=a.bootstrap, level=a.level,
                            seed=a.seed, max_failed_frac=a.max_failed_frac,
                            reference_csv=a.reference, reference_policy=a.vs)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("--debug", action="store_true",
                    help="show the traceback of an unexpected error (a bug)")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="figures, tables and report.html of one or more sweeps")
    r.add_argument("sweeps", nargs="+", type=Path, help="sweep folders results/<date>_<name>")
    r.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes drawing figures (default: up to 2)")
    _stats_options(r)
    c = sub.add_parser("compare", help="cell-by-cell differences of two runs of one matrix")
    c.add_argument("a", type=Path, help="sweep A (the baseline)")
    c.add_argument("b", type=Path, help="sweep B")
    _stats_options(c)
    t = sub.add_parser("cells", help="a row per cell, as a markdown table (the figures a "
                                     "validation page prints)")
    t.add_argument("sweeps", nargs="+", type=Path, help="sweep folders results/<date>_<name>")
    t.add_argument("--csv", type=Path, metavar="FILE", help="also write the unrounded table")
    _stats_options(t)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        opts = _options(a)
        if a.command == "report":
            rep = report.build(a.sweeps, a.out, opts, workers=a.jobs)
            print(rep.html)
        elif a.command == "cells":
            table = celltable.frame(pipeline.compute(a.sweeps, opts))
            if a.csv:
                table.to_csv(a.csv, index=False)
            print(celltable.markdown(table))
        else:
            cmp_ = compare.compare(a.a, a.b, a.out, opts)
            print(compare.summary(cmp_))
            print(cmp_.html)
    except (SweepError, ValueError, OSError) as e:
        if a.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line here, the traceback with --debug
        if a.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (a kvbench bug; rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
