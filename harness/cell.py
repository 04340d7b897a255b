"""One cell, end to end: server up, agents run, metrics scraped, records written, server down.

A cell folder is complete when it holds ``DONE``, written last. A cell that runs again (a
resume, a requeue after pre-emption) first moves whatever an earlier attempt left into
``_attempts/<n>/`` (ignored by pyarrow datasets), so it restarts cleanly and loses nothing. A
complete cell is never moved or rewritten, but by an explicit rerun (``sweep --rerun``).

The process that runs a cell holds the cell folder's lock (``harness.lock``, ``_kvbench.lock``)
from before it looks at the folder until it is done with it: a second writer (another sweep,
another SLURM job, ``launch cell``) is refused, naming the holder.

Status in the manifest: ``ok`` (the measurement ran to its end with a healthy server; request
errors, if any, are rows), ``failed`` (our side failed: the server did not start or died, a
client worker died),
``interrupted`` (a signal stopped it: SIGTERM/SIGINT/SIGHUP from a cancel, Ctrl-C or the
scheduler, or the scheduler's pre-emption / time-out signal, SIGUSR2; ``error`` names it). Only
``ok`` cells get ``DONE``; failed and interrupted cells run again on the next ``sweep``.

Its parts: ``harness.drive`` measures (client, scraper, watchdog), ``harness.finish`` writes
the records, ``harness.stops`` handles stop signals and words why a cell ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import OmegaConf

import workloads
from harness import kv_size, policies, records, stops
from harness import manifest as mf
from harness.cellkey import CellKey
from harness.client import ClientResult
from harness.drive import drive, reset_between_cells, worker_choice
from harness.errors import CellFailed, KvbenchError
from harness.finish import finish
from harness.lock import CELL_LOCK, FolderLock
from harness.metrics import MetricRows
from harness.records import DONE, ClientSummary, EngineInfo, Manifest, is_done
from harness.server import Server, kv_cache_capacity, redact_env
from harness.shards import ClientWorkerDied

log = logging.getLogger(__name__)

# The names of this module's parts before they moved to harness.stops / harness.finish
# (tests and older code use them).
_Interrupted, _failure, _finish = stops.Interrupted, stops.failure, finish
_raise_if_stopped, _signals_raise = stops.raise_if_stopped, stops.signals_raise
_stop_requested = stops.stop_requested

__all__ = ["CellComplete", "archive_previous", "cell_lock", "manifest_head",
           "reset_between_cells", "run_cell", "run_cells"]  # fmt: skip


class CellComplete(KvbenchError):
    """A complete cell (``DONE``) would have been moved or rewritten: refused."""


def archive_previous(cell_dir: Path, rerun: bool = False) -> int:
    """Move an earlier attempt's files to _attempts/<n>/; return this attempt's number.

    Files whose name starts with ``_`` stay (``_attempts/``, the cell lock). A complete cell
    (``DONE``) is refused with :class:`CellComplete` and left as it is, unless ``rerun`` (an
    explicit ``sweep --rerun`` of it): then ``DONE`` moves first, so an archive cut short
    leaves an incomplete cell, never a ``DONE`` without its records."""
    if is_done(cell_dir) and not rerun:
        raise CellComplete(f"{cell_dir} is complete (DONE): its files are never moved or "
                           "rewritten but by an explicit rerun "
                           "(python -m launch sweep --rerun PATTERN ...)")  # fmt: skip
    leftovers = [p for p in cell_dir.iterdir() if not p.name.startswith("_")]
    leftovers.sort(key=lambda p: p.name != DONE)
    prev = sorted(int(p.name) for p in (cell_dir / "_attempts").glob("*") if p.name.isdigit())
    n = (prev[-1] if prev else 0) + 1
    if not leftovers:
        return n
    dest = cell_dir / "_attempts" / str(n)
    dest.mkdir(parents=True)
    for p in leftovers:
        shutil.move(str(p), dest / p.name)
    return n + 1


def cell_lock(cell_dir: Path) -> FolderLock:
    """The lock a cell's writer holds on its folder (not yet acquired)."""
    return FolderLock(Path(cell_dir), CELL_LOCK, "cell folder",
                      hint="another process runs this cell; wait for it to end, or stop it "
                           "(python -m launch cancel <sweep>)")  # fmt: skip


@contextlib.contextmanager
def _cell_log(path: Path):
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(h)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(h)
        h.close()


def run_cell(cfg, cell_dir: str | Path, rerun: bool = False) -> Manifest | None:
    """Run one cell into ``cell_dir``; return its manifest (None: it was complete already).
    Raises CellFailed if it failed."""
    return run_cells([cfg], [cell_dir], rerun=[cell_dir] if rerun else ())[0]


def run_cells(cfgs: list, cell_dirs: list, rerun=()) -> list[Manifest | None]:
    """Run cells that differ only in JPS on one server, one after another.

    With more than one cell to run, the server is shared: before each cell after the first,
    the engine is drained and its prefix cache reset (``/reset_prefix_cache`` with
    ``reset_external``, so offload tiers are emptied too), and the manifest records it. The
    server's log is cut per cell; its working folder (policy files, plugin snapshots) is
    ``_server/`` beside the cells.

    Complete cells (``DONE``) are skipped and never touched, except those in ``rerun`` (an
    explicit ``sweep --rerun``), whose files move to ``_attempts/<n>/`` first. Every cell to
    run is locked (``cell_lock``) before its folder is looked at again, and stays locked until
    its records are written: a cell another process holds refuses the whole group
    (:class:`harness.lock.LockHeld`, naming the holder) before anything is touched.
    """
    dirs = [Path(d) for d in cell_dirs]
    again = {Path(d) for d in rerun}
    out: list[Manifest | None] = [None for _ in dirs]
    maybe = [(c, d) for c, d in zip(cfgs, dirs, strict=True) if d in again or not is_done(d)]
    if not maybe:
        log.info("cells complete; skipped: %s", ", ".join(map(str, dirs)))
        return out
    with contextlib.ExitStack() as held:
        locks = {d: held.enter_context(cell_lock(d)) for _, d in maybe}
        for lk in locks.values():
            if lk.took_over is not None:
                log.warning("%s", lk.takeover_line())
        # Under the locks: another writer may have completed a cell since it was looked at.
        todo = [(c, d) for c, d in maybe if d in again or not is_done(d)]
        if not todo:
            log.info("cells complete; skipped: %s", ", ".join(map(str, dirs)))
            return out
        _run_locked(todo, dirs, again, locks, out)
    return out


def _run_locked(todo: list, dirs: list[Path], again: set[Path], locks: dict[Path, FolderLock],
                out: list[Manifest | None]) -> None:  # fmt: skip
    attempts = {d: archive_previous(d, rerun=d in again) for _, d in todo}
    shared = len(todo) > 1
    workdir = todo[0][1].parent / "_server" if shared else todo[0][1]
    workdir.mkdir(parents=True, exist_ok=True)
    with stops.signals_raise():
        server = Server(todo[0][0], workdir / "server.log", dev_mode=shared)
        mans = [_man_start(c, d, attempts[d], server, shared) for c, d in todo]
        why = "not run: an earlier cell of its server failed"
        try:
            try:
                with _cell_log(todo[0][1] / "client.log"):
                    server.__enter__()
                    kv = kv_cache(todo[0][0], server)
            except BaseException as e:
                why = stops.failure(e)[1]
                if isinstance(e, KvbenchError):
                    raise CellFailed(f"cell {todo[0][1]} failed: {why}") from e
                raise
            for man in mans:
                man.server["kv_cache"] = kv
            for k, ((cfg, d), man) in enumerate(zip(todo, mans, strict=True)):
                stops.raise_if_stopped()
                with _cell_log(d / "client.log"):
                    if k:
                        man.server["cache_reset"] = asyncio.run(reset_between_cells(server))
                    _measure(cfg, d, man, server, workdir, locks[d])
                out[dirs.index(d)] = man
        finally:
            server.stop()
            status = "failed"
            if stops.stop_requested():
                status, why = "interrupted", stops.stop_error()
            for man, (_, d) in zip(mans, todo, strict=True):
                if man.status == "running":  # never measured: the server failed first
                    man.status, man.error = status, why
                    finish(d, man, None, MetricRows(), done=False)


def kv_cache(cfg, server: Server) -> dict[str, object] | None:
    """The KV cache the server's engine allocated (its log, ``kv_cache_capacity``), and the
    policy's write-through host tier beside it; a warning when that tier is the smaller: a
    tier that copies everything the engine computes, smaller than VRAM's KV cache, holds a
    subset of VRAM under recency eviction and serves almost nothing (LMCache held more than
    VRAM in 0 of 8,400 lookups on the H200: docs/validation/h200-20261129-seed.md)."""
    try:
        kv = kv_cache_capacity(server.log_since(0))
        tier = policies.of(cfg).write_through_gib(cfg)
    except Exception as e:  # noqa: BLE001  a record of the set-up, never a reason to fail
        log.warning("could not read the KV cache size from the server's log: %s", e)
        return None
    if kv is None:
        log.warning("the server's log names no KV cache size (an engine other than vLLM 0.26's?)")
        return None
    gib = kv["gib"]
    log.info("KV cache: %s tokens on the %s%s", f"{kv['tokens']:,}", kv["device"],
             f", {gib:g} GiB" if gib is not None else "")
    if tier is not None:
        kv["write_through_gib"] = tier
        if isinstance(gib, float) and tier < gib:
            log.warning("policy=%s on the %s: %s", cfg.policy.name, kv["device"],
                        kv_size.small_tier(tier, gib))
    return kv


def _man_start(cfg, cell_dir: Path, attempt: int, server: Server, shared: bool) -> Manifest:
    man = manifest_head(cfg, attempt)
    man.server = {"argv": server.command.argv, "env": redact_env(server.command.env),
                  "shared": shared, "workdir": str(server.workdir)}  # fmt: skip
    try:
        man.write(cell_dir)
    except OSError as e:  # a full disk before anything ran: one line, nothing started
        why = records.write_failure(e, cell_dir / records.MANIFEST)
        raise CellFailed(f"cell {cell_dir} failed: {why}") from e
    records.reserve_space(cell_dir)  # given back to record the failure if the disk fills
    return man


def _measure(cfg, cell_dir: Path, man: Manifest, server: Server, workdir: Path,
             lock: FolderLock | None = None) -> None:  # fmt: skip
    wl = workloads.build(cfg)
    man.workload = {**OmegaConf.to_container(cfg.workload, resolve=True), **wl.summary()}  # type: ignore[dict-item]
    choice = worker_choice(cfg, wl)
    man.client = ClientSummary(workers=choice.workers, workers_basis=choice.basis)
    log.info("client: %d worker%s (%s)", choice.workers, "s" * (choice.workers > 1), choice.basis)
    if choice.short:
        log.warning("client: %.3g requests/s expected, more than %d worker(s) carry on time "
                    "(%g each): arrivals may lag", choice.rate_rps, choice.workers,
                    choice.capacity_rps / choice.workers)  # fmt: skip
    res: ClientResult | None = None
    metrics = MetricRows()
    log_from = server.log_size()
    keep = (server, workdir, log_from)
    try:
        man.times["server_ready_unix"] = time.time()
        res = asyncio.run(drive(cfg, server, wl, cell_dir, metrics, choice.workers))
        stops.raise_if_stopped()
        if not server.alive():
            assert server.proc is not None  # started by the caller; stop() has not run yet
            raise CellFailed(f"server exited (code {server.proc.returncode}) during the cell")
        man.status = "ok"
    except BaseException as e:
        man.status, man.error = stops.failure(e)
        if res is None and isinstance(e, ClientWorkerDied):
            res = e.result  # the records there are, the lost worker's jobs as error rows
        finish(cell_dir, man, res, metrics, done=False, keep=keep)
        if isinstance(e, KvbenchError):
            raise CellFailed(f"cell {cell_dir} failed: {man.error}") from e
        raise
    finish(cell_dir, man, res, metrics, done=True, keep=keep,
           before_done=lock.clear if lock is not None else None)
    if man.status != "ok":  # its records could not be written (a full disk)
        raise CellFailed(f"cell {cell_dir} failed: {man.error}")


def manifest_head(cfg, attempt: int) -> Manifest:
    """The manifest a cell starts with (status running), before the server is up."""
    versions = mf.versions()
    return Manifest(
        cell=CellKey.from_config(cfg),
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        engine=EngineInfo(cfg.engine.name, cfg.engine.version, versions.get(cfg.engine.package)),
        versions=versions,
        git=mf.git_commit(),
        host=mf.host(),
        process=mf.process(),
        scheduler=mf.scheduler(),
        attempt=attempt,
        times={"start_utc": datetime.now(UTC).isoformat(), "start_unix": time.time()},
    )
