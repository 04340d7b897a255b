"""The async agent client: open-loop Poisson job arrivals, closed-loop turns inside a job.

Each job starts at its scheduled arrival whatever the server is doing; inside a job, turn k+1
is sent after turn k ended and its tool time passed. Requests stream (``/v1/completions``,
prompt as token ids) so TTFT is measured. A request that fails before any byte came back
(a stale pooled connection, say) is retried up to ``max_retries`` times and the retries are
recorded; any other failure, or a time-out, ends the job: the turn becomes an error row and
the job's later turns ``not_sent`` rows. Nothing is silently missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx
import openai
from openai import AsyncOpenAI

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


@dataclass
class ClientResult:
    turns: list[TurnRecord] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    t0_unix: float = 0.0
    wall_s: float = 0.0


class _NoByte(Exception):
    """The request failed before any byte of the response came back (safe to retry)."""


class AgentClient:
    def __init__(self, base_url: str, api_key: str, opts: ClientOptions) -> None:
        self.opts = opts
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=5)
        self.http = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(opts.request_timeout_s))
        self.api = AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key=api_key, http_client=self.http, max_retries=0
        )
        self.jobs_done = 0
        self.jobs_total = 0
        self.abort_reason = ""
        self._tasks: list[asyncio.Task] = []
        self._t0 = 0.0

    def now(self) -> float:
        return time.perf_counter() - self._t0

    async def run(self, wl: Workload) -> ClientResult:
        res = ClientResult()
        self.jobs_total = wl.n_jobs
        self._t0 = time.perf_counter()
        res.t0_unix = time.time()
        try:
            self._tasks = [asyncio.create_task(self._job(j, res)) for j in wl.jobs]
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
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

    async def _job(self, job: JobSpec, res: ClientResult) -> None:
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

    async def _turns(self, job: JobSpec, rows: list[TurnRecord], rec: JobRecord) -> None:
        prompt = list(job.first_prompt)
        for tr in rows:
            tr.prompt_tokens = len(prompt)
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
                prompt = prompt + output + list(job.tool_outputs[tr.turn - 1])

    async def _turn(self, job: JobSpec, turn: int, prompt: list[int], tr: TurnRecord) -> list[int]:
        hint = Hint(job.job_id, turn, job.n_turns, job.tool_after(turn))
        body = {"ignore_eos": True, "return_token_ids": True}
        if self.opts.send_hints:
            body.update(extra_body(hint, continuum_fields=self.opts.continuum_fields))
        for attempt in range(self.opts.max_retries + 1):
            tr.retries = attempt
            if tr.sent_s is None:
                tr.sent_s = self.now()
            try:
                return await asyncio.wait_for(
                    self._stream(prompt, job.completion_tokens, body, tr),
                    timeout=self.opts.request_timeout_s,
                )
            except _NoByte as e:
                tr.error = f"retried: {e.__cause__!r}"
                log.warning("job %d turn %d: no byte back (%r), retrying", job.job_id, turn, e.__cause__)
                continue
            except (TimeoutError, asyncio.TimeoutError):
                return self._fail(tr, "timeout", f"no complete answer in {self.opts.request_timeout_s:.0f} s")
            except Exception as e:  # noqa: BLE001 - any failure of the server is data
                return self._fail(tr, "error", f"{type(e).__name__}: {e}")
        return self._fail(tr, "error", f"gave up after {tr.retries} retries: {tr.error}")

    def _fail(self, tr: TurnRecord, status: str, msg: str) -> list[int]:
        tr.status, tr.error, tr.last_token_s = status, msg[:2000], self.now()
        return []

    async def _stream(self, prompt: list[int], max_tokens: int, body: dict, tr: TurnRecord) -> list[int]:
        out: list[int] = []
        got_byte = False
        try:
            stream = await self.api.completions.create(
                model=self.opts.model, prompt=prompt, max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True}, extra_body=body,
            )  # fmt: skip
            async for chunk in stream:
                got_byte = True
                for choice in chunk.choices:
                    ids = (choice.model_extra or {}).get("token_ids") or []
                    if (ids or choice.text) and tr.first_token_s is None:
                        tr.first_token_s = self.now()
                    out.extend(ids)
                if chunk.usage is not None:
                    _usage(tr, chunk.usage)
        except (openai.APIConnectionError, httpx.TransportError) as e:
            if not got_byte and not isinstance(e, openai.APITimeoutError):
                raise _NoByte() from e
            raise
        tr.last_token_s = self.now()
        tr.status, tr.error = "ok", None
        if tr.completion_tokens == 0:
            tr.completion_tokens = len(out)
        return out


def _usage(tr: TurnRecord, usage) -> None:
    tr.server_prompt_tokens = usage.prompt_tokens
    tr.completion_tokens = usage.completion_tokens
    details = getattr(usage, "prompt_tokens_details", None)
    if details is not None and details.cached_tokens is not None:
        tr.cached_tokens = int(details.cached_tokens)
