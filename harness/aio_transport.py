"""An httpx transport on aiohttp: what the agent client's AsyncOpenAI sends its requests through.

openai builds each request and hands it to an ``httpx.AsyncClient``; under it, httpx's own
transport (httpcore, h11, anyio: a time-out scope, an h11 event and three generator layers per
read) made most of the client's CPU per streamed completion of ~22 chunks on the 2-core dev
machine: 7.4 ms a request through plain httpx in a micro-benchmark, 1.8 ms through aiohttp; in
``bench/client_peers.py``'s small row the client went from 9.1 to 4.7 ms a request with this
transport (bench/README.md). :class:`AioTransport` sends the request with aiohttp and hands
httpx back a response whose body is aiohttp's reads as they come.

What the client relies on is kept: httpx's time-outs (``request.extensions["timeout"]``:
``connect`` -> aiohttp's ``sock_connect``, ``read`` -> ``sock_read``, the longest silence while
waiting for the headers or between two reads of the body; ``pool`` bounds the wait for a
connection and the connect together) and httpx's exceptions, so openai and the client tell a
time-out from a failure before any byte (retried) and from a cut mid-stream:

- a connect time-out: ``httpx.ConnectTimeout``; a read time-out: ``httpx.ReadTimeout``;
- a refused connection: ``httpx.ConnectError``; the server closing the connection before or
  while answering: ``httpx.RemoteProtocolError``; a reset or other socket error:
  ``httpx.ReadError``.

One aiohttp session per key (the client's job id), each with its own connector, so a job's
turns reuse its own keep-alive connection as they did with one httpx pool per job. The body is
left as it came (``auto_decompress=False``): httpx decodes it per ``Content-Encoding``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL


def _httpx_error(e: BaseException, request: httpx.Request) -> httpx.TransportError:
    """httpx's exception for aiohttp's ``e`` (ordered most specific first)."""
    msg = f"{type(e).__name__}: {e}"
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(msg, request=request)
    if isinstance(e, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(msg, request=request)
    if isinstance(e, aiohttp.ClientConnectorError):
        return httpx.ConnectError(msg, request=request)
    if isinstance(e, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                      aiohttp.ClientResponseError)):  # fmt: skip
        return httpx.RemoteProtocolError(msg, request=request)
    return httpx.ReadError(msg, request=request)


# aiohttp's failures: its own, and a socket error from the connection (a reset mid-body can
# surface as a plain OSError, ConnectionResetError, from the stream reader)
_AIO_ERRORS = (aiohttp.ClientError, OSError)


class _Body(httpx.AsyncByteStream):
    """The response body: aiohttp's reads as they come; ``aclose`` releases the response (its
    connection goes back to the pool when the body was read to the end, is closed if not)."""

    __slots__ = ("_resp", "_request")

    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._resp = resp
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except _AIO_ERRORS as e:
            raise _httpx_error(e, self._request) from e

    async def aclose(self) -> None:
        self._resp.release()


class AioTransport(httpx.AsyncBaseTransport):
    """httpx requests sent with aiohttp, one session (and connection pool) per key.

    ``key()`` picks the session for a request (the client: the job id in a context variable);
    ``close_key`` closes one (its job ended), ``aclose`` all of them.
    """

    def __init__(self, key: Callable[[], int] | None = None, keepalive_s: float = 5.0) -> None:
        self._key = key or (lambda: -1)
        self._keepalive_s = keepalive_s
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}

    def _session(self, key: int) -> aiohttp.ClientSession:
        s = self._sessions.get(key)
        if s is None:
            conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_s)
            s = aiohttp.ClientSession(
                connector=conn, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )  # fmt: skip
            self._sessions[key] = s
        return s

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        t = request.extensions.get("timeout") or {}
        k = (t.get("connect"), t.get("read"), t.get("pool"))
        ct = self._timeouts.get(k)
        if ct is None:
            ct = self._timeouts[k] = aiohttp.ClientTimeout(
                total=None, connect=k[2], sock_connect=k[0], sock_read=k[1]
            )
        return ct

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        try:
            resp = await self._session(self._key()).request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=CIMultiDict(request.headers.multi_items()),
                data=body or None,
                timeout=self._timeout(request),
                allow_redirects=False,
            )
        except _AIO_ERRORS as e:
            raise _httpx_error(e, request) from e
        return httpx.Response(
            resp.status,
            headers=list(resp.raw_headers),
            stream=_Body(resp, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (resp.reason or "").encode("ascii", "replace")},
        )  # fmt: skip

    async def close_key(self, key: int) -> None:
        s = self._sessions.pop(key, None)
        if s is not None:
            await s.close()

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()
