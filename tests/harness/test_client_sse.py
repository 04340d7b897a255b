"""The client reads the streamed body itself (harness.client._sse_events), not through openai's
AsyncStream: SSE framing however the bytes are split, CRLF line ends, comments, multi-line
data, [DONE] and what follows it, the usage chunk, vLLM's mid-stream error event (an APIError,
as openai raised) and a non-2xx status before the stream (openai's own error, as before)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from harness.client import AgentClient, ClientOptions, _sse_events
from workloads.agent import JobSpec, Workload


class _Body:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def aiter_bytes(self):
        for p in self.pieces:
            yield p


def _events(raw: bytes, size: int) -> list[bytes]:
    async def go() -> list[bytes]:
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        return [e async for e in _sse_events(_Body(pieces))]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_sse_framing_whatever_the_split():
    raw = (b": a comment\n\ndata: {\"a\": 1}\n\nevent: x\ndata: {\"b\":\ndata: 2}\n\n"
           b"id: 3\n\ndata:{\"c\": 3}\r\n\r\ndata: [DONE]\n\ndata: {\"after\": 1}\n\n"
           b"data: {\"unterminated\": 1}")  # fmt: skip
    want = [b'{"a": 1}', b'{"b":\n2}', b'{"c": 3}']
    for size in (1, 2, 3, 7, 1000):
        assert _events(raw, size) == want, size
    assert _events(b"data: 1\r\rdata: 2\n\n", 1) == [b"1", b"2"]


def _chunk(**kw) -> bytes:
    return b"data: " + json.dumps({"id": "x", "object": "text_completion", **kw}).encode()


class RawServer:
    """A TCP server that answers every request with ``handler(reader, writer)``."""

    def __init__(self, handler) -> None:
        self.handler, self.conns = handler, 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"content-length")), 0)  # fmt: skip
                body = await reader.readexactly(length)
                if not await self.handler(head, body, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Server(RawServer):
    """Keep-alive HTTP/1.1; answers each request with ``script(n)`` (n: requests so far)."""

    def __init__(self, script) -> None:
        super().__init__(self._answer)
        self.script, self.n = script, 0

    async def _answer(self, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        self.n += 1
        status, pieces = self.script(self.n)
        payload = b"".join(pieces)
        ctype = b"text/event-stream" if status == 200 else b"application/json"
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
                     % (status, ctype, len(payload)))  # fmt: skip
        for p in pieces:
            writer.write(p)
            await writer.drain()
        return True


def _run(script, n_turns: int = 2):
    job = JobSpec(job_id=0, arrival_s=0.0, first_prompt=(1, 2, 3),
                  tool_outputs=tuple((7,) for _ in range(n_turns - 1)),
                  tool_s=tuple(0.0 for _ in range(n_turns - 1)), completion_tokens=3)  # fmt: skip

    srv = _Server(script)

    async def go():
        async with srv as url:
            client = AgentClient(url, "k", ClientOptions(model="m", request_timeout_s=5))
            return await client.run(Workload(jobs=[job], jps=1.0, seed=0))

    return asyncio.run(go()), srv


def _ok(n: int) -> tuple[int, list[bytes]]:
    first = _chunk(choices=[{"index": 0, "text": "", "token_ids": None,
                             "prompt_token_ids": [1, 2, 3]}])  # fmt: skip
    toks = [
        _chunk(choices=[{"index": 0, "text": "a", "token_ids": [10 * n + i]}]) for i in range(3)
    ]
    usage = _chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 3,
                                      "prompt_tokens_details": {"cached_tokens": 2}})  # fmt: skip
    body = b"\n\n".join([first, *toks, usage, b"data: [DONE]"]) + b"\n\n"
    return 200, [body[i : i + 5] for i in range(0, len(body), 5)]  # split anywhere


def test_stream_read_into_the_turn_record_and_the_connection_reused():
    res, srv = _run(_ok)
    assert [t.status for t in res.turns] == ["ok", "ok"], res.turns
    t = res.turns[0]
    assert t.completion_tokens == 3 and t.server_prompt_tokens == 3 and t.cached_tokens == 2
    assert t.sent_s is not None and t.first_token_s is not None and t.last_token_s is not None
    assert t.sent_s <= t.first_token_s <= t.last_token_s
    assert res.turns[1].prompt_tokens == 3 + 3 + 1  # turn 1's output ids (10, 11, 12) appended
    assert srv.conns == 1  # the body was read to its end: keep-alive held


def test_error_event_mid_stream_and_error_status():
    def err(n: int) -> tuple[int, list[bytes]]:
        tok = _chunk(choices=[{"index": 0, "text": "a", "token_ids": [5]}])
        e = b'data: {"error": {"message": "boom", "type": "InternalError", "code": 500}}'
        return 200, [tok + b"\n\n", e + b"\n\n", b"data: [DONE]\n\n"]

    res, _ = _run(err)
    t = res.turns[0]
    assert t.status == "error" and t.error == "APIError: boom" and t.retries == 0, t
    assert res.turns[1].status == "not_sent"

    res, _ = _run(lambda n: (500, [b'{"error": {"message": "bad"}}']))
    t = res.turns[0]
    assert t.status == "error" and t.error.startswith("InternalServerError"), t
