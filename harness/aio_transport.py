"""Sending the agent client's requests with aiohttp, as an httpx transport and without one.

openai builds the client's requests as httpx requests; under them, httpx's own transport
(httpcore, h11, anyio: a time-out scope, an h11 event and three generator layers per read) made
most of the client's CPU per streamed completion of ~22 chunks on the 2-core dev machine: 7.4 ms
a request through plain httpx in a micro-benchmark, 1.8 ms through aiohttp; in
``bench/client_peers.py``'s small row the client went from 9.1 to 4.7 ms a request with
:class:`AioTransport` under openai (bench/README.md). It sends an httpx request with aiohttp and
hands httpx back a response whose body is aiohttp's reads as they come
(``handle_async_request``). The client now sends its requests with :meth:`AioTransport.send`:
the form of a request that openai built once (URL, headers, time-outs) sent again with each
body, its response (a :class:`Reply`) read straight from aiohttp, with neither openai's nor
httpx's per-request objects: 21-22% less of the client's CPU per request than through
``AsyncOpenAI.post`` and this transport (both rows); with the client's other changes, 3.91 ->
2.37 ms a request at the small row, 5.73 -> 2.81 ms at the seed row (bench/README.md).

What the client relies on is kept either way: httpx's time-outs
(``request.extensions["timeout"]``: ``connect`` -> aiohttp's ``sock_connect``, ``read`` ->
``sock_read``, the longest silence while waiting for the headers or between two reads of the
body; ``pool`` bounds the wait for a connection and the connect together) and httpx's
exceptions, so openai and the client tell a time-out from a failure before any byte (retried)
and from a cut mid-stream:

- a connect time-out: ``httpx.ConnectTimeout``; a read time-out: ``httpx.ReadTimeout``;
- a refused connection: ``httpx.ConnectError``; the server closing the connection before or
  while answering: ``httpx.RemoteProtocolError``; a reset or other socket error:
  ``httpx.ReadError``.

One aiohttp session per key (the client's job id), each with its own connector, so a job's
turns reuse its own keep-alive connection as they did with one httpx pool per job. Through
``handle_async_request`` the body is left as it came (httpx decodes it per
``Content-Encoding``); through ``send``, aiohttp decodes it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import NamedTuple

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


# headers that depend on the body or that aiohttp writes itself from the URL and the body
_PER_BODY = (b"host", b"content-length")


def form_headers(form: httpx.Request) -> list[tuple[bytes, bytes]]:
    """The headers to send ``form`` again with another body: its own, less Host and
    Content-Length (written again for each body)."""
    return [(k, v) for k, v in form.headers.raw if k.lower() not in _PER_BODY]


class Reply:
    """A response whose body is still to be read (:meth:`AioTransport.send`).

    ``status``; ``pieces()``: the body's reads as they come (an async generator: close it with
    ``contextlib.aclosing``; aiohttp's failures raised as httpx's); ``aclose()`` releases the
    connection (back to the pool when the body was read to its end, closed if not);
    ``read_httpx()``, for a response that is an error: all of it as an httpx response, what
    openai makes its status errors from. ``request``: the request its exceptions name.
    """

    __slots__ = ("_resp", "request")

    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._resp = resp
        self.request = request

    @property
    def status(self) -> int:
        return self._resp.status

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        # readany in a loop: what iter_any does, less its iterator object's layer
        read = self._resp.content.readany
        try:
            while chunk := await read():
                yield chunk
        except _AIO_ERRORS as e:
            raise _httpx_error(e, self.request) from e

    async def aclose(self) -> None:
        self._resp.release()

    def httpx_response(self) -> httpx.Response:
        """As httpx's response, the body still to be read (its stream: ``pieces()``)."""
        return httpx.Response(self._resp.status, headers=list(self._resp.raw_headers),
                              stream=_Body(self), request=self.request,
                              extensions=self._extensions())  # fmt: skip

    async def read_httpx(self) -> httpx.Response:
        """As httpx's response, the body read (and the connection released)."""
        try:
            body = await self._resp.read()
        except _AIO_ERRORS as e:
            raise _httpx_error(e, self.request) from e
        finally:
            self._resp.release()
        # as read (by send: decoded): the headers that described its encoding are left out
        headers = [(k, v) for k, v in self._resp.raw_headers
                   if k.lower() not in (b"content-encoding", b"content-length",
                                        b"transfer-encoding")]  # fmt: skip
        return httpx.Response(self._resp.status, headers=headers, content=body,
                              request=self.request, extensions=self._extensions())  # fmt: skip

    def _extensions(self) -> dict[str, object]:
        return {"http_version": b"HTTP/1.1",
                "reason_phrase": (self._resp.reason or "").encode("ascii", "replace")}  # fmt: skip


class _Body(httpx.AsyncByteStream):
    """A :class:`Reply`'s body as httpx's response stream; ``aclose`` releases the response."""

    __slots__ = ("_reply",)

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._reply.pieces()

    async def aclose(self) -> None:
        await self._reply.aclose()


class _AioForm(NamedTuple):
    """An httpx request as aiohttp sends it."""

    request: httpx.Request
    method: str
    url: URL
    headers: CIMultiDict[str]
    timeout: aiohttp.ClientTimeout


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
        self._last_form: _AioForm | None = None  # what send sent last, as aiohttp sends it

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

    def _aio_form(self, request: httpx.Request) -> _AioForm:
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in form_headers(request))  # fmt: skip
        return _AioForm(request, request.method, URL(str(request.url), encoded=True), headers,
                        self._timeout(request))  # fmt: skip

    async def _send(self, form: _AioForm, body: bytes, decompress: bool) -> Reply:
        try:
            resp = await self._session(self._key()).request(
                form.method, form.url, headers=form.headers, data=body or None,
                timeout=form.timeout, allow_redirects=False, auto_decompress=decompress,
            )  # fmt: skip
        except _AIO_ERRORS as e:
            raise _httpx_error(e, form.request) from e
        return Reply(resp, form.request)

    async def send(self, form: httpx.Request, body: bytes) -> Reply:
        """``form`` sent again, with the body ``body``; its response, unread and decoded.

        For a client that sends many requests alike (the agent client: one form, built by
        openai once): the aiohttp form of ``form`` (URL, headers, time-outs) is made once, not
        per request, and no httpx object is made per request.
        """
        if self._last_form is None or self._last_form.request is not form:
            self._last_form = self._aio_form(form)
        return await self._send(self._last_form, body, decompress=True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        # the body as it came: httpx decodes it
        reply = await self._send(self._aio_form(request), body, decompress=False)
        return reply.httpx_response()

    async def close_key(self, key: int) -> None:
        s = self._sessions.pop(key, None)
        if s is not None:
            await s.close()

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()
