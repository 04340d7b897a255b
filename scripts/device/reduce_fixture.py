"""Reduce a sweep folder to a test fixture for the analysis package.

    python scripts/device/reduce_fixture.py SWEEP OUT

Keeps `sweep.json` and, per cell, `manifest.json`, `DONE`, `turns.parquet`, `jobs.parquet`, the
plugins' stats snapshots (`*.json` beside the manifest) and `metrics.parquet` filtered to the
series the analysis reads (below). Drops `server.log`, `client.log`, `_server/`, `_submitit/`.
Nothing kept is changed: rows are filtered by metric name only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from analysis import policy_counters, why  # noqa: E402
from harness.cellkey import iter_cell_dirs

# what the analysis reads (analysis.why, analysis.policy_counters), and two more series
# cell_table.py and readers of the fixture use
METRICS = {*why.METRIC_NAMES, *policy_counters.METRIC_NAMES,
           "vllm:external_prefix_cache_queries_total", "vllm:prompt_tokens_total"}
KEEP = ("manifest.json", "DONE", "turns.parquet", "jobs.parquet")


def reduce_cell(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    for snap in src.glob("*.json"):
        shutil.copy2(snap, dst / snap.name)
    if (src / "metrics.parquet").exists():
        t = pq.read_table(src / "metrics.parquet")
        names = t.column("name")
        keep = pc.or_(pc.is_in(names, value_set=pa.array(sorted(METRICS))),
                      pc.and_(pc.starts_with(names, "kvbench:"), pc.ends_with(names, "_total")))
        pq.write_table(t.filter(keep), dst / "metrics.parquet", compression="zstd")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "sweep.json", out / "sweep.json")
    cells = [d for d, _ in iter_cell_dirs(src)]
    for d in cells:
        reduce_cell(d, out / d.relative_to(src))
    print(f"{len(cells)} cells -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
