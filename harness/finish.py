"""A cell's end: its records, its manifest, then ``DONE``, each file whole or absent.

Every file goes through ``harness.records``' atomic writers. A write that fails (a full disk,
a quota, an I/O error) fails the cell: the records that can still be written are, and the
manifest gets status ``failed`` and one line naming the file and the disk, written into the
space the cell reserved at its start (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from harness import policies, records
from harness.client import ClientResult
from harness.metrics import MetricRows
from harness.records import DONE, ClientSummary, Manifest
from harness.server import Server
from harness.stops import clip

log = logging.getLogger(__name__)


def keep_server_files(server: Server, workdir: Path, log_from: int, cell_dir: Path) -> None:
    """The cell's slice of the server log, the plugins' stats snapshots, and what the policy
    counted in that slice (``records.LOG_COUNTS``), into the cell."""
    text = server.log_since(log_from)
    if workdir != cell_dir:  # a shared server: its log and snapshots are in its own folder
        records.write_text(text, cell_dir / "server.log")
        for f in workdir.glob("*.json"):
            records.write_text(f.read_text(), cell_dir / f.name)
    try:
        write_log_counts(server.cfg, text, cell_dir)
    except Exception as e:  # noqa: BLE001  a log the parser did not expect loses no record
        log.warning("could not read the policy's counts from %s's log: %s", cell_dir, e)


def write_log_counts(cfg, log_text: str, cell_dir: Path) -> dict[str, float] | None:
    """What the cell's policy counted in its log slice (``Policy.log_counts``), written as
    ``records.LOG_COUNTS`` when there is anything; also scripts/device/log_counts.py's
    backfill for cells made before cells wrote it."""
    counts = policies.of(cfg).log_counts(cfg, log_text)
    if counts is not None:
        records.write_json(counts, cell_dir / records.LOG_COUNTS)
    return counts


def finish(cell_dir: Path, man: Manifest, res: ClientResult | None, metrics: MetricRows,
           done: bool, keep: tuple[Server, Path, int] | None = None,
           before_done: Callable[[], object] | None = None) -> None:  # fmt: skip
    """Write the cell's records and its manifest, then, for a cell that measured to its end
    (``done``), ``DONE``, last.

    Every file is whole or absent (``records``' writers). A write that fails (a full disk, a
    quota, an I/O error) fails the cell: the records that can still be written are, and the
    manifest gets status ``failed`` and one line naming the file and the disk (``disk full
    (ENOSPC): ...``), written into the space the cell reserved at its start. If even that
    cannot be written, the error is logged and the cell is left without ``DONE``.
    ``before_done`` runs right before ``DONE`` is written (the cell lock marks itself free
    there: nothing in a complete cell changes after its ``DONE``)."""
    if res is not None:
        basis = man.client.workers_basis if man.client is not None else None
        man.client = client_summary(man.config["workload"]["max_lag_s"], res, basis)
    man.times["end_utc"] = datetime.now(UTC).isoformat()
    man.times["wall_s"] = time.time() - man.times["start_unix"]
    steps: list[tuple[Path, Callable[[], object]]] = []
    if keep is not None:
        server, workdir, log_from = keep
        steps.append((cell_dir / "server.log",
                      lambda: keep_server_files(server, workdir, log_from, cell_dir)))  # fmt: skip
    tables: list[tuple[str, Any, pa.Schema]] = []
    if res is not None:
        tables += [("turns.parquet", records.turn_rows(res.turns), records.TURNS),
                   ("jobs.parquet", records.job_rows(res.jobs), records.JOBS)]  # fmt: skip
    tables.append(("metrics.parquet", metrics.__dict__, records.METRICS))
    for name, rows, schema in tables:
        steps.append((cell_dir / name, functools.partial(records.write_table, rows, schema,
                                                         cell_dir / name)))  # fmt: skip
    failure: str | None = None
    for path, step in steps:
        try:
            step()
        except OSError as e:
            failure = failure or records.write_failure(e, path)
            log.error("could not write %s: %s", path, records.write_failure(e, path))
    if failure is None:
        failure = write_manifest(cell_dir, man, done, before_done)
    if failure is not None:
        record_write_failure(cell_dir, man, failure)
    (cell_dir / records.PROGRESS).unlink(missing_ok=True)
    records.release_space(cell_dir)


def write_manifest(cell_dir: Path, man: Manifest, done: bool,
                   before_done: Callable[[], object] | None = None) -> str | None:  # fmt: skip
    """The manifest, then DONE for a cell that ended ok; the failure's line if one failed."""
    try:
        man.write(cell_dir)
    except OSError as e:
        return records.write_failure(e, cell_dir / records.MANIFEST)
    if done and man.status == "ok":
        if before_done is not None:
            before_done()
        try:
            records.write_text(datetime.now(UTC).isoformat() + "\n", cell_dir / DONE)
        except OSError as e:
            return records.write_failure(e, cell_dir / DONE)
    return None


def record_write_failure(cell_dir: Path, man: Manifest, failure: str) -> None:
    """Fail the cell for a record it could not write; the manifest goes into the reserve."""
    log.error("cell %s failed: %s", cell_dir, failure)
    if man.status == "ok":
        man.status, man.error = "failed", failure
    else:  # already failed: keep why, and add what could not be written
        man.error = clip(f"{man.error}\n{failure}")
    records.release_space(cell_dir)
    with contextlib.suppress(OSError):
        (cell_dir / DONE).unlink(missing_ok=True)
    try:
        man.write(cell_dir)
    except OSError as e:
        log.error("could not record the failure in %s: %s", cell_dir / records.MANIFEST,
                  records.write_failure(e, cell_dir / records.MANIFEST))  # fmt: skip


def client_summary(max_lag_s: float, res: ClientResult,
                   workers_basis: str | None = None) -> ClientSummary:  # fmt: skip
    lags = np.array([j.start_s - j.arrival_s for j in res.jobs if j.start_s is not None])
    ok = sum(j.status == "ok" for j in res.jobs)
    p99 = float(np.percentile(lags, 99)) if lags.size else None
    return ClientSummary(
        t0_unix=res.t0_unix,
        wall_s=res.wall_s,
        jobs_ok=ok,
        jobs_failed=len(res.jobs) - ok,
        error_rows=sum(t.status != "ok" for t in res.turns),
        retries=sum(t.retries for t in res.turns),
        lag_p50_s=float(np.percentile(lags, 50)) if lags.size else None,
        lag_p99_s=p99,
        lag_max_s=float(lags.max()) if lags.size else None,
        lag_limit_s=max_lag_s,
        lag_flag=bool(p99 is not None and p99 > max_lag_s),
        workers=res.workers,
        workers_basis=workers_basis,
    )
