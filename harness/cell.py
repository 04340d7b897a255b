"""One cell, end to end: server up, agents run, metrics scraped, records written, server down.

A cell folder is complete when it holds ``DONE``, written last. A cell that runs again (a
resume, a requeue after pre-emption) first moves whatever an earlier attempt left into
``_attempts/<n>/`` (ignored by pyarrow datasets), so it restarts cleanly and loses nothing. A
complete cell is never moved or rewritten, but by an explicit rerun (``sweep --rerun``).

The process that runs a cell holds the cell folder's lock (``harness.lock``, ``_kvbench.lock``)
from before it looks at the folder until it is done with it: a second writer (another sweep,
another SLURM job, ``launch cell``) is refused, naming the holder.

Status in the manifest: ``ok`` (the measurement ran to its end with a healthy server; request
errors, if any, are rows), ``failed`` (our side failed: the server did not start or died),
``interrupted`` (a signal stopped it: SIGTERM/SIGINT/SIGHUP from a cancel, Ctrl-C or the
scheduler, or the scheduler's pre-emption / time-out signal, SIGUSR2; ``error`` names it). Only
``ok`` cells get ``DONE``; failed and interrupted cells run again on the next ``sweep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

import workloads
from harness import manifest as mf
from harness import records
from harness.cellkey import CellKey
from harness.client import AgentClient, ClientOptions, ClientResult
from harness.errors import CellFailed, KvbenchError
from harness.lock import CELL_LOCK, FolderLock
from harness.metrics import MetricRows, scrape_loop
from harness.records import DONE, ClientSummary, EngineInfo, Manifest, is_done
from harness.server import Server, redact_env

log = logging.getLogger(__name__)


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


class _Interrupted(KvbenchError):
    pass


class _Stop:
    """The stop signal this process received, if any (process-wide, as signal handlers are)."""

    got: str | None = None
    preempt: str | None = None  # the scheduler's pre-emption / time-out signal, e.g. SIGUSR2


PREEMPTED = "pre-empted or timed out: the scheduler's signal; submitit requeues the cell if it can"


def _preempt_signal() -> signal.Signals:
    """The signal submitit takes as pre-emption / time-out (``SUBMITIT_PREEMPT_SIGNAL``)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, name, signal.SIGUSR2)


def _stop_error(exc: BaseException | None = None) -> str:
    """The recorded error of a cell stopped by a signal: the signal, named, first (a server
    that exited because the same signal reached it is a consequence, not the cause)."""
    sig = _Stop.got
    text = f"_Interrupted: received {sig}"
    if sig is not None and sig == _Stop.preempt:
        text += f" ({PREEMPTED})"
    quiet = (KvbenchError, SystemExit, KeyboardInterrupt, asyncio.CancelledError)
    if exc is not None and not isinstance(exc, quiet):
        text += f"; then {type(exc).__name__}: {exc}"  # e.g. submitit: "Job not requeued ..."
    return text


def _failure(exc: BaseException) -> tuple[str, str]:
    """(manifest status, error) of a cell that ended with ``exc``."""
    if _Stop.got:
        return "interrupted", _clip(_stop_error(exc))
    return "failed", _clip(f"{type(exc).__name__}: {exc}")


def _stop_requested() -> str | None:
    return _Stop.got


def _raise_if_stopped() -> None:
    """Raise at a safe point if a stop signal came but its exception was swallowed where it
    landed (a request's error handler turns it into an error row; a task keeps it as its
    result; ``contextlib.suppress``)."""
    if _Stop.got:
        raise _Interrupted(f"received {_Stop.got}")


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM/SIGINT/SIGHUP (scancel, ``launch cancel``, Ctrl-C, a closed terminal) unwind
    the cell, so the server context manager stops the server group before the process exits.

    The first signal raises where it lands and is remembered: if that exception is swallowed,
    the client's loop aborts its jobs (``_drive``) and the cell raises at its next safe point
    (``_raise_if_stopped``). Later signals only log: scancel signals every process of the step
    and srun forwards its own copy, and a second exception must not cut short the unwind that
    stops the server and writes the manifest."""

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if _Stop.got:
            log.warning("received %s while stopping (after %s); still stopping", name, _Stop.got)
            return
        _Stop.got = name
        raise _Interrupted(f"received {name}")

    preempt = _preempt_signal()
    before = signal.getsignal(preempt)

    def on_preempt(signum, frame):
        """The scheduler's pre-emption / time-out signal: remember it (so the records name it,
        not what it causes: the server exiting, the requeue's SIGTERM), then let submitit's
        own handler checkpoint and requeue the job."""
        name = signal.Signals(signum).name
        log.warning("received %s: %s", name, PREEMPTED)
        if not _Stop.got:
            _Stop.got = _Stop.preempt = name
        if callable(before):
            before(signum, frame)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    _Stop.got = _Stop.preempt = None
    for s in old:
        signal.signal(s, handler)
    if callable(before):  # only under submitit; elsewhere the signal keeps its default action
        signal.signal(preempt, on_preempt)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if callable(before):
            signal.signal(preempt, before)
        _Stop.got = _Stop.preempt = None


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
    with _signals_raise():
        server = Server(todo[0][0], workdir / "server.log", dev_mode=shared)
        mans = [_man_start(c, d, attempts[d], server, shared) for c, d in todo]
        why = "not run: an earlier cell of its server failed"
        try:
            try:
                with _cell_log(todo[0][1] / "client.log"):
                    server.__enter__()
            except BaseException as e:
                why = _failure(e)[1]
                if isinstance(e, KvbenchError):
                    raise CellFailed(f"cell {todo[0][1]} failed: {why}") from e
                raise
            for k, ((cfg, d), man) in enumerate(zip(todo, mans, strict=True)):
                _raise_if_stopped()
                with _cell_log(d / "client.log"):
                    if k:
                        man.server["cache_reset"] = asyncio.run(reset_between_cells(server))
                    _measure(cfg, d, man, server, workdir, locks[d])
                out[dirs.index(d)] = man
        finally:
            server.stop()
            status = "failed"
            if _stop_requested():
                status, why = "interrupted", _stop_error()
            for man, (_, d) in zip(mans, todo, strict=True):
                if man.status == "running":  # never measured: the server failed first
                    man.status, man.error = status, why
                    _finish(d, man, None, MetricRows(), done=False)


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
    res: ClientResult | None = None
    metrics = MetricRows()
    log_from = server.log_size()
    keep = (server, workdir, log_from)
    try:
        man.times["server_ready_unix"] = time.time()
        res = asyncio.run(_drive(cfg, server, wl, cell_dir, metrics))
        _raise_if_stopped()
        if not server.alive():
            assert server.proc is not None  # started by the caller; stop() has not run yet
            raise CellFailed(f"server exited (code {server.proc.returncode}) during the cell")
        man.status = "ok"
    except BaseException as e:
        man.status, man.error = _failure(e)
        _finish(cell_dir, man, res, metrics, done=False, keep=keep)
        if isinstance(e, KvbenchError):
            raise CellFailed(f"cell {cell_dir} failed: {man.error}") from e
        raise
    _finish(cell_dir, man, res, metrics, done=True, keep=keep,
            before_done=lock.clear if lock is not None else None)
    if man.status != "ok":  # its records could not be written (a full disk)
        raise CellFailed(f"cell {cell_dir} failed: {man.error}")


def _keep_server_files(server: Server, workdir: Path, log_from: int, cell_dir: Path) -> None:
    """The cell's slice of the server log, and the plugins' stats snapshots, into the cell."""
    if workdir == cell_dir:
        return
    records.write_text(server.log_since(log_from), cell_dir / "server.log")
    for f in workdir.glob("*.json"):
        records.write_text(f.read_text(), cell_dir / f.name)


async def reset_between_cells(server: Server, timeout_s: float = 300) -> dict:
    """Wait until the engine is idle, then reset its prefix cache (twice: a plugin holding
    pins makes the first reset fail, see docs/policies/continuum_ttl.md)."""
    import httpx

    from harness.metrics import parse, scrape_once

    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() - t0 < timeout_s:
            m = parse(await scrape_once(http, server.url))
            busy = sum(
                v
                for (n, _), v in m.items()
                if n in ("vllm:num_requests_running", "vllm:num_requests_waiting")
            )
            if busy == 0:
                break
            await asyncio.sleep(0.5)
        codes = []
        for _ in range(2):
            r = await http.post(f"{server.url}/reset_prefix_cache",
                                params={"reset_external": "true"},
                                headers={"Authorization": f"Bearer {server.api_key}"})  # fmt: skip
            codes.append(r.status_code)
    ok = codes[-1] == 200
    if not ok:
        raise CellFailed(
            f"prefix-cache reset between cells failed (HTTP {codes}); "
            "the server must run with VLLM_SERVER_DEV_MODE=1"
        )
    return {"ok": ok, "http": codes, "idle_wait_s": round(time.monotonic() - t0, 3)}


def _clip(text: str, limit: int = 4000) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 4] + "\n[...]\n" + text[-3 * limit // 4 :]


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


async def _drive(cfg, server: Server, wl, cell_dir: Path, metrics: MetricRows) -> ClientResult:
    opts = ClientOptions(
        model=cfg.model.served_name,
        request_timeout_s=cfg.workload.request_timeout_s,
        max_retries=cfg.workload.max_retries,
        send_hints=cfg.policy.sends_hints,
        continuum_fields=cfg.policy.continuum_fields,
        priority=cfg.sched == "program",
    )
    client = AgentClient(server.url, server.api_key, opts)
    stop = asyncio.Event()

    warned: list[str] = []

    def tick() -> None:  # progress is for status and the bar: a failed write only logs
        try:
            records.write_json(
                {"jobs_done": client.jobs_done, "jobs_total": wl.n_jobs, "t_s": client.now(),
                 "state": "running"}, cell_dir / records.PROGRESS,
            )  # fmt: skip
        except OSError as e:
            if not warned:
                warned.append(records.write_failure(e, cell_dir / records.PROGRESS))
                log.warning("progress not updated: %s", warned[0])

    baseline, t_base = await _baseline_scrape(server.url)
    run = asyncio.create_task(client.run(wl))
    await asyncio.sleep(0)  # the client's clock (t0) starts before anything else happens
    if baseline is not None:  # before t0, so counter increases of the cell start from it
        metrics.add(client.now() - (time.perf_counter() - t_base), baseline)
    scraper = asyncio.create_task(scrape_loop(server.url, client.now, metrics, stop, on_tick=tick))
    watchdog = asyncio.create_task(_watch(server, client))
    try:
        while not run.done():  # a stop signal swallowed by a job's task: abort every job
            await asyncio.wait({run}, timeout=0.5)
            if _stop_requested() and not client.abort_reason:
                client.abort(f"received {_stop_requested()}")
        return run.result()
    finally:
        watchdog.cancel()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(scraper, timeout=10)


async def _baseline_scrape(url: str) -> tuple[str | None, float]:
    import httpx

    from harness.metrics import scrape_once

    try:
        async with httpx.AsyncClient() as http:
            text = await scrape_once(http, url)
    except (httpx.HTTPError, ValueError) as e:
        log.warning("baseline metrics scrape failed: %r", e)
        return None, 0.0
    return text, time.perf_counter()


async def _watch(server: Server, client: AgentClient) -> None:
    """If the server dies, end the client now: its unfinished turns become error rows."""
    while server.alive():
        await asyncio.sleep(0.5)
    assert server.proc is not None  # started by the caller; stop() runs after this task ends
    code = server.proc.returncode
    log.error("server exited with code %s during the cell", code)
    await asyncio.sleep(1)  # let in-flight requests fail as they will
    client.abort(f"server exited (code {code}) during the cell")


def _finish(cell_dir: Path, man: Manifest, res: ClientResult | None, metrics: MetricRows,
            done: bool, keep: tuple[Server, Path, int] | None = None,
            before_done: Callable[[], object] | None = None) -> None:
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
        man.client = _client_summary(man.config["workload"]["max_lag_s"], res)
    man.times["end_utc"] = datetime.now(UTC).isoformat()
    man.times["wall_s"] = time.time() - man.times["start_unix"]
    steps: list[tuple[Path, Callable[[], object]]] = []
    if keep is not None:
        server, workdir, log_from = keep
        steps.append((cell_dir / "server.log",
                      lambda: _keep_server_files(server, workdir, log_from, cell_dir)))  # fmt: skip
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
        failure = _write_manifest(cell_dir, man, done, before_done)
    if failure is not None:
        _record_write_failure(cell_dir, man, failure)
    (cell_dir / records.PROGRESS).unlink(missing_ok=True)
    records.release_space(cell_dir)


def _write_manifest(cell_dir: Path, man: Manifest, done: bool,
                    before_done: Callable[[], object] | None = None) -> str | None:
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


def _record_write_failure(cell_dir: Path, man: Manifest, failure: str) -> None:
    """Fail the cell for a record it could not write; the manifest goes into the reserve."""
    log.error("cell %s failed: %s", cell_dir, failure)
    if man.status == "ok":
        man.status, man.error = "failed", failure
    else:  # already failed: keep why, and add what could not be written
        man.error = _clip(f"{man.error}\n{failure}")
    records.release_space(cell_dir)
    with contextlib.suppress(OSError):
        (cell_dir / DONE).unlink(missing_ok=True)
    try:
        man.write(cell_dir)
    except OSError as e:
        log.error("could not record the failure in %s: %s", cell_dir / records.MANIFEST,
                  records.write_failure(e, cell_dir / records.MANIFEST))  # fmt: skip


def _client_summary(max_lag_s: float, res: ClientResult) -> ClientSummary:
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
    )
