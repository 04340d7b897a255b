"""The async agent client: open-loop Poisson job arrivals, closed-loop turns inside a job.

Each job starts at its scheduled arrival whatever the server is doing; inside a job, turn k+1
is sent after turn k ended and its tool time passed. Requests stream (``/v1/completions``,
prompt as token ids) so TTFT is measured. A request that fails before any byte came back
(a stale pooled connection, say) is retried up to ``max_retries`` times and the retries are
recorded; any other failure, or a time-out, ends the job: the turn becomes an error row
(status ``timeout`` when no complete answer came within ``request_timeout_s``, whether the
server stalled before the first byte or mid-stream; never retried, since the server may still
be working on it) and the job's later turns ``not_sent`` rows. Nothing is silently missing.

One :class:`AgentClient` is one process' event loop. It runs a whole workload (``run``), or
one process' share of it against a clock started elsewhere (``run_jobs``): a cell whose
request rate needs more than one core runs several, one per worker process
(:mod:`harness.shards`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
from openai import AsyncOpenAI
from openai._models import FinalRequestOptions

from harness.aio_transport import Reply
from harness.hints import Hint, extra_body
from harness.job_pools import JOB, AioPerJob, HttpxReply, PoolPerJob
from harness.wire import (
    RAW_RESPONSE,
    SSE,
    USAGE,
    dumps,
    extend_ids_json,
    ids_json,
    loads_chunk,
)
from workloads.agent import JobSpec, Workload

log = logging.getLogger(__name__)


@dataclass
class TurnRecord:
    job_id: int
    turn: int
    n_turns: int
    arrival_s: float
    prompt_tokens: int
    tool_s: float
    sent_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    server_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int = 0
    retries: int = 0
    status: str = "not_sent"
    error: str | None = None
    priority: int | None = None  # sched=program: the request's priority (its job's rank)


@dataclass
class JobRecord:
    job_id: int
    arrival_s: float
    n_turns: int
    start_s: float | None = None
    end_s: float | None = None
    turns_done: int = 0
    status: str = "failed"


@dataclass
class ClientOptions:
    model: str
    request_timeout_s: float = 600.0
    max_retries: int = 2
    send_hints: bool = True
    continuum_fields: bool = False
    # sched=program: every request carries its job's rank by arrival as its priority (lower
    # is served first), so vLLM's priority scheduler serves jobs in program-level FCFS order.
    priority: bool = False
    # What sends the requests (their form built by openai, AgentClient._send): "aiohttp"
    # (harness.aio_transport) or "httpx" (httpx's own transport, a pool per job, for
    # comparison: about twice aiohttp's CPU per streamed request).
    transport: str = "aiohttp"


@dataclass
class ClientResult:
    turns: list[TurnRecord] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    t0_unix: float = 0.0
    wall_s: float = 0.0
    workers: int = 1  # client processes that sent the requests (harness.shards)


# Awaited once the jobs are ready to go; returns the clock's start (t0), a time.perf_counter()
# value: on Linux CLOCK_MONOTONIC, the same clock in every process of the host, so client
# processes given one t0 share one schedule (harness.shards).
StartClock = Callable[[], Awaitable[float]]


def arrival_ranks(jobs: Sequence[JobSpec]) -> dict[int, int]:
    """Each job's rank by arrival (ties by job id) over ``jobs``: its priority under
    sched=program. Over the whole workload, also when a process runs only some of its jobs."""
    order = sorted(jobs, key=lambda j: (j.arrival_s, j.job_id))
    return {j.job_id: r for r, j in enumerate(order)}


class _NoByte(Exception):
    """The request failed before any byte of the response came back (safe to retry)."""


class AgentClient:
    def __init__(self, base_url: str, api_key: str, opts: ClientOptions) -> None:
        self.opts = opts
        # httpx logs one INFO line per request (to the cell's client.log, where the root
        # logger takes INFO): ~2,000 lines a minute at 30 requests/s, and their CPU in the
        # event loop. Its warnings stay; a level set on it elsewhere is left as it is (the
        # worker processes set the same, harness.shard_worker).
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=64, keepalive_expiry=5
        )
        if opts.transport not in ("aiohttp", "httpx"):
            raise ValueError(f"transport: 'aiohttp' or 'httpx', not {opts.transport!r}")
        self._transport: PoolPerJob | AioPerJob = (
            AioPerJob() if opts.transport == "aiohttp" else PoolPerJob(limits)
        )
        self.http = httpx.AsyncClient(
            transport=self._transport, timeout=httpx.Timeout(opts.request_timeout_s)
        )
        self.api = AsyncOpenAI(
            base_url=f"{base_url}/v1",
            api_key=api_key,
            # openai annotates http_client as httpx2.AsyncClient, but at run time it also takes
            # an httpx.AsyncClient (openai._httpx2.is_legacy_httpx_async_client).
            http_client=self.http,  # type: ignore[arg-type]
            max_retries=0,
            # Given, not left to openai: it takes the http client's timeout unless that equals
            # httpx's default (5 s), which it replaces by its own 600 s. No limit on one read
            # (read=None): _turn's asyncio.timeout bounds the whole request with the same
            # figure and starts first, so a read limit could never fire before it; with it,
            # aiohttp re-armed a timer for every read (sock_read: a call_later and a cancel
            # each, ~22 a request): 4-5% of the client's CPU per request (bench/README.md).
            # (So openai no longer sends its x-stainless-read-timeout header.)
            timeout=openai.Timeout(opts.request_timeout_s, read=None),
        )
        # self.http is what openai builds requests with (_request_form); closing it at the end
        # of the run closes the transport, its pools or sessions.
        self._form = self._request_form()
        # every request's body starts so (_turn)
        self._body_head = b'{"model":' + dumps(opts.model) + b',"stream":true,"prompt":'
        self.jobs_done = 0
        self.jobs_total = 0
        self._rank: dict[int, int] = {}
        self.abort_reason = ""
        self._tasks: list[asyncio.Task] = []
        self._t0 = 0.0
        self.started = asyncio.Event()  # set once the clock (t0) is set: now() means something

    def now(self) -> float:
        return time.perf_counter() - self._t0

    async def run(self, wl: Workload) -> ClientResult:
        """Run every job of ``wl``; the clock starts when the jobs are ready to go."""
        return await self.run_jobs(wl.jobs, arrival_ranks(wl.jobs))

    async def run_jobs(self, jobs: Sequence[JobSpec], ranks: Mapping[int, int],
                       start: StartClock | None = None) -> ClientResult:  # fmt: skip
        """Run ``jobs`` (all of a workload, or one process' share of it) with their ranks by
        arrival over the whole workload (``arrival_ranks``). ``start``: awaited once the
        records are made, returns t0 (a ``time.perf_counter()`` value, maybe still ahead);
        None: t0 is then. Arrival times count from t0."""
        res = ClientResult()
        self.jobs_total = len(jobs)
        # The records are made before the clock starts: made in each job's task, they held up
        # the first jobs' sends by the time it took for all of them (0.3 s for 2,450 jobs on
        # the 2-core dev machine).
        plans = [self._records(j, res) for j in jobs]
        self._rank = dict(ranks)
        # The garbage collector's full passes stop every job's clock while they walk every
        # live object: on the 2-core dev machine, 0.5 s for what exists now (modules, the
        # workload, the records) and 0.7 s for 2,000 open conversations (~230 objects each).
        # So what exists now is frozen (never walked), and during the run only the young
        # generations are collected, which catch the short-lived cycles; the full pass waits
        # for the end of the run (a 500-conversation run left no cyclic garbage for it).
        # Thresholds and freeze are put back as they were afterwards.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
        try:
            self._t0 = time.perf_counter() if start is None else await start()
            res.t0_unix = time.time() - self.now()
            self.started.set()
            self._tasks = [asyncio.create_task(self._job(j, rec, rows)) for j, rec, rows in plans]
            if self.abort_reason:  # aborted before the jobs existed: end them at once, once
                await asyncio.sleep(0)  # each task has started (so its rows can say why)
                self.abort(self.abort_reason)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await self.http.aclose()
        res.wall_s = self.now()
        res.turns.sort(key=lambda r: (r.job_id, r.turn))
        res.jobs.sort(key=lambda r: r.job_id)
        return res

    def abort(self, reason: str) -> None:
        """End every job now (the server died): unfinished turns become error rows."""
        self.abort_reason = reason
        for t in self._tasks:
            t.cancel()

    @staticmethod
    def _records(job: JobSpec, res: ClientResult) -> tuple[JobSpec, JobRecord, list[TurnRecord]]:
        rec = JobRecord(job_id=job.job_id, arrival_s=job.arrival_s, n_turns=job.n_turns)
        res.jobs.append(rec)
        rows = [
            TurnRecord(
                job_id=job.job_id, turn=t, n_turns=job.n_turns, arrival_s=job.arrival_s,
                prompt_tokens=job.prompt_tokens(t), tool_s=job.tool_after(t),
            )
            for t in range(1, job.n_turns + 1)
        ]  # fmt: skip
        res.turns.extend(rows)
        return job, rec, rows

    async def _job(self, job: JobSpec, rec: JobRecord, rows: list[TurnRecord]) -> None:
        JOB.set(job.job_id)  # this task's requests use this job's connection pool
        try:
            await asyncio.sleep(max(0.0, job.arrival_s - self.now()))
            await self._turns(job, rows, rec)
        except asyncio.CancelledError:
            for tr in rows:
                if tr.status == "not_sent" and tr.sent_s is not None:
                    self._fail(tr, "error", f"aborted in flight: {self.abort_reason}")
                elif tr.status == "not_sent":
                    tr.error = f"not sent: {self.abort_reason}"
            if rec.end_s is None or any(tr.status == "error" for tr in rows):
                rec.end_s = self.now()
        finally:
            rec.status = "ok" if rec.turns_done == job.n_turns else "failed"
            self.jobs_done += 1
            with contextlib.suppress(Exception):
                await self._transport.close_job(job.job_id)

    async def _turns(self, job: JobSpec, rows: list[TurnRecord], rec: JobRecord) -> None:
        # The prompt is kept as its JSON (b"[1,2,...]"), extended turn by turn: each turn's
        # prompt is the last one plus the output and the tool's ids, so only those are encoded
        # (~1.8K ids a turn at the seed row, not the whole prompt: ~8K on average, 0.76 ms of
        # json.dumps in a loop): 11% less CPU per seed-sized request (bench/README.md). Bytes
        # are never walked by the garbage collector either.
        prompt = ids_json(job.first_prompt)
        n_prompt = len(job.first_prompt)
        for tr in rows:
            tr.prompt_tokens = n_prompt
            output = await self._turn(job, tr.turn, prompt, tr)
            if tr.turn == 1:
                rec.start_s = tr.sent_s
            rec.end_s = tr.last_token_s
            if tr.status != "ok":
                for later in rows[tr.turn :]:
                    later.error = "not sent: an earlier turn of the job failed"
                return
            rec.turns_done += 1
            if tr.turn < job.n_turns:
                await asyncio.sleep(tr.tool_s)
                more = (*output, *job.tool_outputs[tr.turn - 1])
                prompt, n_prompt = extend_ids_json(prompt, more), n_prompt + len(more)

    async def _turn(self, job: JobSpec, turn: int, prompt: bytes, tr: TurnRecord) -> list[int]:
        """One turn's request; ``prompt``: its ids as JSON (``ids_json``)."""
        hint = Hint.for_turn(str(job.job_id), turn, job.n_turns, job.tool_after(turn),
                             job.tool_name(turn))  # fmt: skip
        rest: dict[str, Any] = {"max_tokens": job.output_tokens(turn), "stream_options": USAGE,
                                "ignore_eos": True, "return_token_ids": True}  # fmt: skip
        if self.opts.priority:
            rest["priority"] = tr.priority = self._rank[job.job_id]
        if self.opts.send_hints:
            rest.update(extra_body(hint, continuum_fields=self.opts.continuum_fields))
        # The body as openai would write it (openapi_dumps) from {"model", "stream", "prompt",
        # then the rest}: create()'s keys in its order, then the extra ones. The ids are already
        # JSON (prompt); the rest is written here, once for the turn's attempts.
        content = b"".join((self._body_head, prompt, b",", dumps(rest)[1:]))
        for attempt in range(self.opts.max_retries + 1):
            tr.retries = attempt
            if tr.sent_s is None:
                tr.sent_s = self.now()
            try:
                # asyncio.timeout, not wait_for: no extra task per request
                async with asyncio.timeout(self.opts.request_timeout_s):
                    return await self._stream(content, tr)
            except _NoByte as e:
                tr.error = f"retried: {e.__cause__!r}"
                log.warning(
                    "job %d turn %d: no byte back (%r), retrying", job.job_id, turn, e.__cause__
                )
                continue
            except (TimeoutError, openai.APITimeoutError, httpx.TimeoutException):
                # asyncio's limit on the whole request, or httpx's on one read (a stall of the
                # same length mid-stream), whichever fires first: the same time-out
                return self._fail(
                    tr, "timeout", f"no complete answer in {self.opts.request_timeout_s:g} s"
                )
            except Exception as e:  # noqa: BLE001 - any failure of the server is data
                return self._fail(tr, "error", f"{type(e).__name__}: {e}")
        return self._fail(tr, "error", f"gave up after {tr.retries} retries: {tr.error}")

    def _request_form(self) -> httpx.Request:
        """The request openai would send each turn (the body aside), built by openai once: its
        URL, its headers (auth, content type, openai's own) and its httpx extensions (the
        time-out). The same for every request of the client: each is this form sent again with
        its own body (``_send``)."""
        req = self.api._build_request(FinalRequestOptions.construct(
            method="post", url="/completions", content=b"", headers=RAW_RESPONSE))  # fmt: skip
        # (openai annotates it as httpx2's Request; with self.http it is httpx's)
        return cast("httpx.Request", req)

    async def _send(self, content: bytes) -> Reply | HttpxReply:
        """Send one request (its body: ``content``) and hand back its response, unread.

        openai built the request's form once (``_request_form``: what ``AsyncOpenAI.post``
        would build again for every request), and its exceptions are raised as its
        ``request()`` raised them: ``APITimeoutError`` and ``APIConnectionError`` for a
        failure before the response, ``APIStatusError`` (by status, its body read, made by
        openai) for a non-2xx status; so the records are the ones ``post`` gave. What is left
        out is openai's and httpx's per-request path (``post`` building the options, headers
        and URL again, then ``AsyncClient.send``: auth, redirects, cookies, httpx's request
        and response objects and the transport's translation of them): the form goes straight
        to the job's connection (``AioTransport.send``). That took 21-22% of the client's CPU
        per request off (both rows; bench/README.md): with ``post`` kept, the client stayed
        above vllm bench's CPU per request whatever else was cut.
        """
        form = self._form
        try:
            reply = await self._transport.send(form, content)
        except httpx.TimeoutException as e:
            raise openai.APITimeoutError(request=form) from e  # type: ignore[arg-type]
        except httpx.RequestError as e:
            raise openai.APIConnectionError(request=form) from e  # type: ignore[arg-type]
        if not 200 <= reply.status < 300:
            # (openai annotates the response as httpx2's; at run time it takes httpx's)
            response = await reply.read_httpx()
            raise self.api._make_status_error_from_response(response)  # type: ignore[arg-type]
        return reply

    def _fail(self, tr: TurnRecord, status: str, msg: str) -> list[int]:
        tr.status, tr.error, tr.last_token_s = status, msg[:2000], self.now()
        return []

    async def _stream(self, content: bytes, tr: TurnRecord) -> list[int]:
        out: list[int] = []
        got_byte = False
        try:
            reply = await self._send(content)
            try:
                sse = SSE()
                pieces = reply.pieces()
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        if sse.done:
                            continue  # read to the end, so the connection can be reused
                        for data in sse.feed(piece):
                            got_byte = True
                            chunk = loads_chunk(data)
                            if type(chunk) is not dict:
                                raise ValueError(f"not a JSON object: {data[:200]!r}")
                            if chunk.get("error"):
                                # what openai's AsyncStream raises for vLLM's mid-stream error
                                raise _stream_error(chunk["error"], reply.request)
                            for choice in chunk.get("choices") or ():
                                ids = choice.get("token_ids") or ()
                                if tr.first_token_s is None and (ids or choice.get("text")):
                                    tr.first_token_s = self.now()
                                out.extend(ids)
                            usage = chunk.get("usage")
                            if usage is not None:
                                _usage(tr, usage)
            finally:
                await reply.aclose()
        except (openai.APIConnectionError, httpx.RequestError) as e:
            # a time-out is never retried: the server may be working on the request
            timed_out = isinstance(e, (openai.APITimeoutError, httpx.TimeoutException))
            if not got_byte and not timed_out:
                raise _NoByte() from e
            raise
        tr.last_token_s = self.now()
        tr.status, tr.error = "ok", None
        if tr.completion_tokens == 0:
            tr.completion_tokens = len(out)
        return out


def _stream_error(error: Any, request: httpx.Request) -> openai.APIError:
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    # openai annotates request as httpx2.Request; at run time it keeps whatever it is given
    return openai.APIError(message, request, body=error)  # type: ignore[arg-type]


def _usage(tr: TurnRecord, usage: dict) -> None:
    tr.server_prompt_tokens = usage["prompt_tokens"]
    tr.completion_tokens = usage["completion_tokens"]
    details = usage.get("prompt_tokens_details")
    if details is not None and details.get("cached_tokens") is not None:
        tr.cached_tokens = int(details["cached_tokens"])
