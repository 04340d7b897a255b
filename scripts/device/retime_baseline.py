"""Correct one known timestamp error in cell records made before commit 7889579.

Until then the cell's first metrics scrape was stamped before the client's clock started:
``client.now()`` returned ``time.perf_counter() - 0``, seconds since the machine booted
(hundreds of seconds), instead of ~0. Its values are right (the state at the cell's start:
the baseline of the counters of a server shared across JPS levels); only ``t_s`` is wrong.
Rows are written in scrape order, so that scrape is the file's first ``t_s`` group; when it is
later than the second scrape it is re-stamped 0.0 (the client's t0, within milliseconds).

    python scripts/device/retime_baseline.py <sweep folder>      # rewrites metrics.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness.cellkey import iter_cell_dirs


def retime(path: Path) -> bool:
    t = pq.read_table(path)
    ts = t.column("t_s").to_pylist()
    if not ts:
        return False
    first = ts[0]
    rest = [x for x in ts if x != first]
    if not rest or first <= min(rest):
        return False
    new = [0.0 if x == first else x for x in ts]
    t = t.set_column(t.schema.get_field_index("t_s"), "t_s", pa.array(new, pa.float64()))
    pq.write_table(t, path)
    return True


if __name__ == "__main__":
    for p in (d / "metrics.parquet" for d, _ in iter_cell_dirs(Path(sys.argv[1]))):
        print(("re-stamped " if retime(p) else "unchanged  ") + str(p))
