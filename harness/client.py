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
import contextvars
import gc
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
from openai import AsyncOpenAI
from openai._models import FinalRequestOptions

from harness.aio_transport import AioTransport, Reply, form_headers
from harness.hints import Hint, extra_body
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


_JOB: contextvars.ContextVar[int] = contextvars.ContextVar("kvbench_job", default=-1)


class _PoolPerJob(httpx.AsyncBaseTransport):
    """One connection pool per job, chosen by the job id in a context variable.

    A job has at most one request in flight, so its pool holds one connection, reused from
    turn to turn while keep-alive lasts. One shared pool does not scale to thousands of
    conversations: httpcore's pool walks every connection it holds each time it assigns a
    request, and once it holds more than ``max_keepalive_connections`` it builds a list of
    all of them for each idle one (O(connections^2) per request) and closes idle connections
    at once, so each turn opened a new TCP connection.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._ssl = httpx.create_ssl_context()  # once: loading the CA bundle takes ms
        self._limits = limits
        self._pools: dict[int, httpx.AsyncHTTPTransport] = {}

    def _pool(self, job: int) -> httpx.AsyncHTTPTransport:
        pool = self._pools.get(job)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=self._ssl, limits=self._limits)
            self._pools[job] = pool
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool(_JOB.get()).handle_async_request(request)

    async def send(self, form: httpx.Request, body: bytes) -> _HttpxReply:
        """``form`` sent again with the body ``body`` (as ``AioTransport.send``)."""
        request = httpx.Request(form.method, form.url, headers=form_headers(form), content=body,
                                extensions=dict(form.extensions))  # fmt: skip
        response = await self.handle_async_request(request)
        response.request = request  # as httpx's client sets it
        return _HttpxReply(response)

    async def close_job(self, job: int) -> None:
        pool = self._pools.pop(job, None)
        if pool is not None:
            await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class _HttpxReply:
    """An httpx response as an ``aio_transport.Reply``: what ``_PoolPerJob.send`` hands back."""

    __slots__ = ("_response", "request")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.request = response.request

    @property
    def status(self) -> int:
        return self._response.status_code

    def pieces(self) -> AsyncGenerator[bytes, None]:
        return cast("AsyncGenerator[bytes, None]", self._response.aiter_bytes())

    async def aclose(self) -> None:
        await self._response.aclose()

    async def read_httpx(self) -> httpx.Response:
        try:
            await self._response.aread()
        finally:
            await self._response.aclose()
        return self._response


class _AioPerJob(AioTransport):
    """One aiohttp session (its own connector: one keep-alive connection) per job, chosen by
    the job id in the context variable, as :class:`_PoolPerJob` does with httpx's pools."""

    def __init__(self) -> None:
        super().__init__(key=_JOB.get, keepalive_s=5.0)

    async def close_job(self, job: int) -> None:
        await self.close_key(job)


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
        self._transport: _PoolPerJob | _AioPerJob = (
            _AioPerJob() if opts.transport == "aiohttp" else _PoolPerJob(limits)
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
        self._body_head = b'{"model":' + _dumps(opts.model) + b',"stream":true,"prompt":'
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
        _JOB.set(job.job_id)  # this task's requests use this job's connection pool
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
        prompt = _ids_json(job.first_prompt)
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
                prompt, n_prompt = _extend_ids_json(prompt, more), n_prompt + len(more)

    async def _turn(self, job: JobSpec, turn: int, prompt: bytes, tr: TurnRecord) -> list[int]:
        """One turn's request; ``prompt``: its ids as JSON (``_ids_json``)."""
        hint = Hint.for_turn(str(job.job_id), turn, job.n_turns, job.tool_after(turn),
                             job.tool_name(turn))  # fmt: skip
        rest: dict[str, Any] = {"max_tokens": job.output_tokens(turn), "stream_options": _USAGE,
                                "ignore_eos": True, "return_token_ids": True}  # fmt: skip
        if self.opts.priority:
            rest["priority"] = tr.priority = self._rank[job.job_id]
        if self.opts.send_hints:
            rest.update(extra_body(hint, continuum_fields=self.opts.continuum_fields))
        # The body as openai would write it (openapi_dumps) from {"model", "stream", "prompt",
        # then the rest}: create()'s keys in its order, then the extra ones. The ids are already
        # JSON (prompt); the rest is written here, once for the turn's attempts.
        content = b"".join((self._body_head, prompt, b",", _dumps(rest)[1:]))
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
            method="post", url="/completions", content=b"", headers=_RAW_RESPONSE))  # fmt: skip
        # (openai annotates it as httpx2's Request; with self.http it is httpx's)
        return cast("httpx.Request", req)

    async def _send(self, content: bytes) -> Reply | _HttpxReply:
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
                sse = _SSE()
                pieces = reply.pieces()
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        if sse.done:
                            continue  # read to the end, so the connection can be reused
                        for data in sse.feed(piece):
                            got_byte = True
                            chunk = _loads_chunk(data)
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


# the header openai's with_streaming_response sent (the server ignores it): still sent, so that
# the request is the one it was
_RAW_RESPONSE = {"X-Stainless-Raw-Response": "stream"}
_USAGE = {"include_usage": True}

# JSON as openai writes a request's body (openai._utils._json.openapi_dumps), as bytes
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _dumps(obj: Any) -> bytes:
    return _encode(obj).encode()


def _ids_json(ids: Sequence[int]) -> bytes:
    """``ids`` as a JSON array, as openai would write them (``[1,2,3]``)."""
    return _dumps(tuple(ids))


def _extend_ids_json(ids_json: bytes, more: Sequence[int]) -> bytes:
    """``_ids_json(ids + more)``, where ``ids_json`` is ``_ids_json(ids)``: only ``more`` is
    encoded."""
    if not more:
        return ids_json
    if ids_json == b"[]":
        return _ids_json(more)
    return b"".join((ids_json[:-1], b",", _ids_json(more)[1:]))


# json's C scanner (what JSONDecoder.raw_decode calls): (value, end) from a str and a start
_scan_json: Callable[[str, int], tuple[Any, int]]
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json_loads(data: bytes) -> Any:
    """``json.loads(data)`` for an event's data (UTF-8, as SSE is): json's C scanner straight on
    the text, without ``loads``' checks and encoding detection (2.1 against 3.5 us for a
    token's chunk in a loop, ~22 chunks a request; 6-9% of the client's CPU per small
    request, bench/README.md). Where the scanner does not end at the text's end (white space
    around the value, more than one value, a byte-order mark, not JSON) or the bytes are not
    UTF-8, ``json.loads`` decides, as before."""
    try:
        s = data.decode()
        obj, end = _scan_json(s, 0)
    except (UnicodeDecodeError, StopIteration):
        return json.loads(data)
    return obj if end == len(s) else json.loads(data)


# vLLM's echo of the prompt's ids (return_token_ids) in a stream's first chunk, as its pydantic
# models write it (no spaces)
_ECHO = b'"prompt_token_ids":['
_ID_BYTES = b"0123456789,"


def _loads_chunk(data: bytes) -> Any:
    """``json.loads(data)``, less the prompt's ids that vLLM echoes in the first chunk.

    Asked for the output's ids (``return_token_ids``), vLLM also sends back every prompt id in
    the first chunk's choice (``prompt_token_ids``), ~8K at the seed row: parsing them took
    0.57 ms in a loop, 12-17% of the client's CPU per seed-sized request (bench/README.md),
    for ids the client does not read (it reads ``choices[].token_ids`` and ``text``,
    ``usage`` and ``error``). So each such array is replaced by ``null`` before parsing, where
    it surely is one: the key as vLLM writes it, not preceded by a backslash (a quote cannot
    appear unescaped inside a JSON string, so this is a key, not text), and between its ``[``
    and the first ``]`` nothing but digits and commas (a flat array of non-negative ints).
    Anything else (spaces, a nested array, a sign, another shape) is parsed whole, as before.
    """
    i = data.find(_ECHO)
    if i < 0:
        return _json_loads(data)
    parts: list[bytes] = []
    start = 0
    while i >= 0:
        lo = i + len(_ECHO)
        hi = data.find(b"]", lo)
        if hi < 0 or (i and data[i - 1] == 0x5C) or data[lo:hi].translate(None, _ID_BYTES):
            return _json_loads(data)  # not surely a flat array of ids: parsed whole
        parts += (data[start : lo - 1], b"null")
        start = hi + 1
        i = data.find(_ECHO, start)
    parts.append(data[start:])
    return _json_loads(b"".join(parts))


class _SSE:
    """Server-sent events from a body's pieces as they come: ``feed(piece)`` returns the data
    of each event that the piece completed, as bytes, up to ``[DONE]``, which sets ``done``
    (what follows it is dropped; the caller reads the rest of the body, so that the connection
    can be reused).

    In place of openai's AsyncStream (its SSEDecoder splits the body into lines, decodes each
    to str and builds a ServerSentEvent per event, through three layers of async generators):
    within run-to-run noise at small prompts, 9.1 -> 8.0 ms of CPU a request at seed-sized
    ones, whose first chunk echoes ~8K prompt ids (bench/README.md). A plain method, not an
    async generator between the body and the client: one generator step less per read
    (within the noise of a pair of runs: -2 to +1%).
    Per the SSE spec: events end at a blank line (LF, CRLF or CR line ends), ``data:`` lines
    are joined by LF, one space after the colon is dropped, comments (``:``) and other fields
    are ignored, an event without data is not dispatched. Like openai's, an unterminated last
    event is dropped and reading stops at ``[DONE]``.
    """

    __slots__ = ("buf", "done")

    def __init__(self) -> None:
        self.buf = b""
        self.done = False

    def feed(self, piece: bytes) -> list[bytes]:
        buf = self.buf + piece if self.buf else piece
        if b"\r" in buf:
            # CRLF or CR line ends, rare: made LF (a CR last in buf may be half a CRLF)
            keep = buf.endswith(b"\r")
            buf = (buf[:-1] if keep else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep:
                buf += b"\r"
        if b"\n\n" not in buf:
            self.buf = buf
            return []
        *events, self.buf = buf.split(b"\n\n")
        out = []
        for ev in events:
            if ev.startswith(b"data: ") and b"\n" not in ev:
                data = ev[6:]  # the common case: one data line
            else:
                lines = [
                    ln[6:] if ln.startswith(b"data: ") else ln[5:]
                    for ln in ev.split(b"\n")
                    if ln.startswith(b"data:")
                ]
                if not lines:
                    continue
                data = b"\n".join(lines)
            if data.startswith(b"[DONE]"):
                self.done, self.buf = True, b""
                break
            out.append(data)
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
