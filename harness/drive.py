"""A cell's measurement, while it runs: the client's jobs, the metrics scraper, the watchdog.

:func:`drive` runs the cell's jobs with the client :mod:`harness.workers` chose (one process,
or several: :mod:`harness.shards`), scrapes the server's metrics on the client's clock (a
baseline just before t0, so counters count from the cell's start), writes ``progress.json``,
aborts the client if the server dies (its unfinished turns become error rows) or a stop
signal was swallowed by a job's task. Between cells of one server,
:func:`reset_between_cells` drains the engine and resets its prefix cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import httpx

from harness import records, workers
from harness.client import ClientOptions, ClientResult
from harness.errors import CellFailed
from harness.metrics import MetricRows, parse, scrape_loop, scrape_once
from harness.server import Server
from harness.shards import LoadClient, make_client
from harness.stops import stop_requested

log = logging.getLogger(__name__)


def client_options(cfg) -> ClientOptions:
    return ClientOptions(
        model=cfg.model.served_name,
        request_timeout_s=cfg.workload.request_timeout_s,
        max_retries=cfg.workload.max_retries,
        send_hints=cfg.policy.sends_hints,
        continuum_fields=cfg.policy.continuum_fields,
        priority=cfg.sched == "program",
    )


def worker_choice(cfg, wl) -> workers.WorkerChoice:
    """The cell's client processes: ``workload.client_workers``, or (``auto``) from the cores
    it has here and its expected request rate."""
    rate = workers.request_rate(wl.jps, workers.turns_per_job(wl.jobs))
    setting = cfg.workload.get("client_workers", workers.AUTO)
    return workers.choose(setting, rate, str(cfg.engine.device), workers.cell_cores())


async def drive(cfg, server: Server, wl, cell_dir: Path, metrics: MetricRows,
                n_workers: int = 1) -> ClientResult:  # fmt: skip
    client = make_client(server.url, server.api_key, client_options(cfg), n_workers)
    stop = asyncio.Event()
    warned: list[str] = []

    def tick() -> None:  # progress is for status and the bar: a failed write only logs
        try:
            progress = records.Progress(client.jobs_done, wl.n_jobs, client.now(), n_workers)
            records.write_progress(progress, cell_dir)
        except OSError as e:
            if not warned:
                warned.append(records.write_failure(e, cell_dir / records.PROGRESS))
                log.warning("progress not updated: %s", warned[0])

    baseline, t_base = await baseline_scrape(server.url)
    run = asyncio.create_task(client.run(wl))
    started = asyncio.create_task(client.started.wait())
    watchdog = asyncio.create_task(watch(server, client))
    scraper: asyncio.Task | None = None
    try:
        while not run.done():  # a stop signal swallowed by a job's task: abort every job
            waits = {run} if scraper is not None else {run, started}
            await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if scraper is None and started.done():  # the client's clock (t0) is set
                if baseline is not None:  # from before t0: counter increases start from it
                    metrics.add(client.now() - (time.perf_counter() - t_base), baseline)
                scraper = asyncio.create_task(
                    scrape_loop(server.url, client.now, metrics, stop, on_tick=tick)
                )
            if stop_requested() and not client.abort_reason:
                client.abort(f"received {stop_requested()}")
        return run.result()
    finally:
        started.cancel()
        watchdog.cancel()
        stop.set()
        if scraper is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(scraper, timeout=10)


async def baseline_scrape(url: str) -> tuple[str | None, float]:
    try:
        async with httpx.AsyncClient() as http:
            text = await scrape_once(http, url)
    except (httpx.HTTPError, ValueError) as e:
        log.warning("baseline metrics scrape failed: %r", e)
        return None, 0.0
    return text, time.perf_counter()


async def watch(server: Server, client: LoadClient) -> None:
    """If the server dies, end the client now: its unfinished turns become error rows."""
    while server.alive():
        await asyncio.sleep(0.5)
    assert server.proc is not None  # started by the caller; stop() runs after this task ends
    code = server.proc.returncode
    log.error("server exited with code %s during the cell", code)
    await asyncio.sleep(1)  # let in-flight requests fail as they will
    client.abort(f"server exited (code {code}) during the cell")


async def reset_between_cells(server: Server, timeout_s: float = 300) -> dict:
    """Wait until the engine is idle, then reset its prefix cache (twice: a plugin holding
    pins makes the first reset fail, see docs/policies/continuum_ttl.md)."""
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
