"""The agent client's connections: one pool (httpx) or session (aiohttp) per job.

The job a request belongs to is read from a context variable (:data:`JOB`) that each job's
task sets before its first turn (``harness.client.AgentClient._job``); a job has at most one
request in flight, so its pool holds one keep-alive connection, reused from turn to turn.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator
from typing import cast

import httpx

from harness.aio_transport import AioTransport, form_headers

JOB: contextvars.ContextVar[int] = contextvars.ContextVar("kvbench_job", default=-1)


class PoolPerJob(httpx.AsyncBaseTransport):
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
        return await self._pool(JOB.get()).handle_async_request(request)

    async def send(self, form: httpx.Request, body: bytes) -> HttpxReply:
        """``form`` sent again with the body ``body`` (as ``AioTransport.send``)."""
        request = httpx.Request(form.method, form.url, headers=form_headers(form), content=body,
                                extensions=dict(form.extensions))  # fmt: skip
        response = await self.handle_async_request(request)
        response.request = request  # as httpx's client sets it
        return HttpxReply(response)

    async def close_job(self, job: int) -> None:
        pool = self._pools.pop(job, None)
        if pool is not None:
            await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class HttpxReply:
    """An httpx response as an ``aio_transport.Reply``: what ``PoolPerJob.send`` hands back."""

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


class AioPerJob(AioTransport):
    """One aiohttp session (its own connector: one keep-alive connection) per job, chosen by
    the job id in the context variable, as :class:`PoolPerJob` does with httpx's pools."""

    def __init__(self) -> None:
        super().__init__(key=JOB.get, keepalive_s=5.0)

    async def close_job(self, job: int) -> None:
        await self.close_key(job)
