"""harness.aio_transport: httpx requests sent with aiohttp. The body as it came (decoded once,
by httpx), keep-alive per key, httpx's time-outs honoured and aiohttp's failures raised as
httpx's (what openai and the client tell apart: a time-out, a failure before any byte, a cut
mid-stream); a request's form sent again with other bodies (send); and the client's stream
tests with either transport."""

from __future__ import annotations

import asyncio
import gzip

import httpx
import pytest

from harness.aio_transport import AioTransport
from harness.client import AgentClient, ClientOptions
from tests.harness import test_client_sse as sse
from workloads.agent import JobSpec, Workload


async def _get(url: str, timeout: float = 5.0, **kw) -> tuple[httpx.Response, bytes]:
    client = httpx.AsyncClient(transport=AioTransport(), timeout=timeout)
    async with client as c, c.stream("POST", url + "/x", content=b"hello", **kw) as r:
        return r, await r.aread()


def test_body_headers_keepalive_and_gzip_decoded_once():
    seen: list[bytes] = []

    async def handler(head, body, writer) -> bool:
        seen.append(head + body)
        payload = gzip.compress(b"abc" * 100)
        writer.write(b"HTTP/1.1 201 Made\r\ncontent-encoding: gzip\r\nx-a: 1\r\nx-a: 2\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(payload), payload))  # fmt: skip
        await writer.drain()
        return True

    async def go():
        srv = sse.RawServer(handler)
        async with srv as url, httpx.AsyncClient(transport=AioTransport(), timeout=5) as c:
            for _ in range(3):
                r = await c.post(url + "/p?q=1%2F2", content=b"hello", headers={"X-B": "b"})
                assert r.status_code == 201 and r.reason_phrase == "Made"
                assert r.content == b"abc" * 100  # decoded by httpx, once
                assert r.headers.get_list("x-a") == ["1", "2"]
        return srv

    srv = asyncio.run(go())
    assert srv.conns == 1  # keep-alive: one connection for the three requests
    req = seen[0].lower()
    assert req.startswith(b"post /p?q=1%2f2 http/1.1\r\n") and req.endswith(b"hello")
    assert b"\r\nx-b: b\r\n" in req and req.count(b"content-length") == 1


def test_refused_connection_is_connect_error():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):
            await _get(f"http://127.0.0.1:{port}")

    asyncio.run(go())


def test_close_before_answer_is_remote_protocol_error():
    async def handler(head, body, writer) -> bool:
        return False  # closes the connection without a byte

    async def go():
        async with sse.RawServer(handler) as url:
            with pytest.raises(httpx.RemoteProtocolError):
                await _get(url)

    asyncio.run(go())


def test_read_timeout_before_headers_and_mid_body():
    async def silent(head, body, writer) -> bool:
        await asyncio.sleep(3)
        return False

    async def stall_mid(head, body, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()
        await asyncio.sleep(3)
        return False

    async def go():
        async with sse.RawServer(silent) as url:
            with pytest.raises(httpx.ReadTimeout):
                await _get(url, timeout=0.3)
        client = httpx.AsyncClient(transport=AioTransport(), timeout=0.3)
        async with sse.RawServer(stall_mid) as url, client as c, c.stream("GET", url) as r:
            assert r.status_code == 200
            got = b""
            with pytest.raises(httpx.ReadTimeout):
                async for piece in r.aiter_bytes():
                    got += piece
            assert got == b"0123456789"

    asyncio.run(go())


def test_cut_mid_body_is_remote_protocol_error():
    async def cut(head, body, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        return False

    async def go():
        client = httpx.AsyncClient(transport=AioTransport(), timeout=5)
        async with sse.RawServer(cut) as url, client as c, c.stream("GET", url) as r:
            with pytest.raises(httpx.RemoteProtocolError):
                async for _ in r.aiter_bytes():
                    pass

    asyncio.run(go())


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_client_streams_with_either_transport(transport: str, monkeypatch):
    """test_client_sse's stream and error tests, through each transport."""
    orig = ClientOptions.__init__

    def opts(self, *a, **kw):
        orig(self, *a, **kw)
        self.transport = transport

    monkeypatch.setattr(ClientOptions, "__init__", opts)
    sse.test_stream_read_into_the_turn_record_and_the_connection_reused()
    sse.test_error_event_mid_stream_and_error_status()


def test_unknown_transport_refused():
    with pytest.raises(ValueError, match="transport"):
        AgentClient("http://x", "k", ClientOptions(model="m", transport="h2"))


def test_sessions_per_job_closed_with_the_job():
    job = JobSpec(job_id=3, arrival_s=0.0, first_prompt=(1, 2, 3), tool_outputs=((7,),),
                  tool_s=(0.0,), completion_tokens=3)  # fmt: skip

    async def go():
        async with sse._Server(sse._ok) as url:
            client = AgentClient(url, "k", ClientOptions(model="m", transport="aiohttp"))
            res = await client.run(Workload(jobs=[job], jps=1.0, seed=0))
            return res, client._transport._sessions  # type: ignore[union-attr]

    res, sessions = asyncio.run(go())
    assert [t.status for t in res.turns] == ["ok", "ok"] and sessions == {}


def test_send_form_again_decoded_keepalive_and_errors():
    """AioTransport.send: a request's form sent again with each body (Host and Content-Length
    written for it), over the key's keep-alive connection, the body decoded; a non-2xx answer
    read whole as httpx's response; failures before the answer as httpx's exceptions."""
    seen: list[bytes] = []

    async def handler(head, body, writer) -> bool:
        seen.append(head + b"\r\n\r\n" + body)
        if body == b"bad":
            payload = b'{"error": {"message": "no"}}'
            writer.write(b"HTTP/1.1 400 Bad\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(payload), payload))  # fmt: skip
        else:
            payload = gzip.compress(b"data: " + body + b"\n\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n"
                         b"\r\n%s" % (len(payload), payload))  # fmt: skip
        await writer.drain()
        return True

    srv = sse.RawServer(handler)

    async def go() -> None:
        t = AioTransport()
        async with srv as url:
            form = httpx.Request("POST", url + "/v1/c", headers={"X-B": "b"}, content=b"",
                                 extensions={"timeout": httpx.Timeout(5).as_dict()})  # fmt: skip
            for body in (b"one", b"second"):
                reply = await t.send(form, body)
                assert reply.status == 200 and reply.request is form
                got = b"".join([p async for p in reply.pieces()])
                assert got == b"data: " + body + b"\n\n"  # decoded
                await reply.aclose()
            reply = await t.send(form, b"bad")
            r = await reply.read_httpx()
            assert r.status_code == 400 and r.json() == {"error": {"message": "no"}}
            assert r.reason_phrase == "Bad" and r.request is form
        await t.aclose()
        with pytest.raises(httpx.ConnectError):  # the server is gone: refused
            await t.send(httpx.Request("POST", url, content=b""), b"x")
        await t.aclose()

    asyncio.run(go())
    assert srv.conns == 1  # the three requests over one keep-alive connection
    assert len(seen) == 3
    for req, body in zip(seen, (b"one", b"second", b"bad"), strict=True):
        low = req.lower()
        assert low.startswith(b"post /v1/c http/1.1\r\n") and req.endswith(body)
        assert low.count(b"\r\nhost: ") == 1 and low.count(b"\r\ncontent-length: ") == 1
        assert b"\r\ncontent-length: %d\r\n" % len(body) in low and b"\r\nx-b: b\r\n" in low
