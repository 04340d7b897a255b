"""Write ``records.LOG_COUNTS`` into the cells of sweep folders made before cells wrote it.

    python scripts/device/log_counts.py SWEEP [SWEEP ...]

For each cell with a ``server.log`` (its slice of the server's log) and a manifest, and no
``log_counts.json`` yet, asks the cell's policy what its log counted and writes it
(``harness.finish.write_log_counts``, what a cell calls when it ends). Cells whose policy reads
nothing from its log (all but ``lmcache``) are left as they are. Prints one line per cell
written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from harness import records  # noqa: E402
from harness.cellkey import iter_cell_dirs  # noqa: E402
from harness.finish import write_log_counts  # noqa: E402


def backfill(sweep: Path) -> int:
    n = 0
    for cell, _ in iter_cell_dirs(sweep):
        log, out = cell / "server.log", cell / records.LOG_COUNTS
        if out.exists() or not log.is_file() or not (cell / records.MANIFEST).is_file():
            continue
        cfg = OmegaConf.create(records.Manifest.read(cell).config)
        counts = write_log_counts(cfg, log.read_text(errors="replace"), cell)
        if counts is not None:
            n += 1
            print(f"{out}: {counts['bytes_offload'] / 1e9:,.1f} GB to host, "
                  f"{counts['bytes_onload'] / 1e9:,.1f} GB back")
    return n


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    total = sum(backfill(Path(p)) for p in sys.argv[1:])
    print(f"{total} cell(s) written")
