"""The client reads the streamed body itself (harness.wire.SSE), not through openai's
AsyncStream: SSE framing however the bytes are split, CRLF line ends, comments, multi-line
data, [DONE] and what follows it, the usage chunk, vLLM's mid-stream error event (an APIError,
as openai raised) and a non-2xx status before the stream (openai's own error, as before). It
sends openai's request form again with each body (the headers and body AsyncOpenAI.post sent),
and parses vLLM's first chunk less the prompt ids it echoes, where that is safe."""

from __future__ import annotations

import asyncio
import contextlib
import json

from harness.client import AgentClient, ClientOptions
from harness.wire import SSE
from workloads.agent import JobSpec, Workload


def _events(raw: bytes, size: int) -> list[bytes]:
    sse, out = SSE(), []
    for i in range(0, len(raw), size):
        if not sse.done:
            out += sse.feed(raw[i : i + size])
    return out


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


def test_request_is_what_openai_post_sends():
    """The client sends openai's request form again with each body (AgentClient._send): the
    same headers and body as AsyncOpenAI.post sent, prompt ids encoded turn by turn
    (harness.wire.extend_ids_json) included."""
    import httpx
    import openai
    from openai import AsyncOpenAI, AsyncStream

    from harness.hints import Hint, extra_body
    from harness.wire import RAW_RESPONSE, USAGE

    seen: list[tuple[bytes, bytes]] = []

    async def capture(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        seen.append((head, body))
        status, pieces = _ok(len(seen))
        payload = b"".join(pieces)
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: text/event-stream\r\ncontent-length: %d"
                     b"\r\n\r\n%s" % (status, len(payload), payload))  # fmt: skip
        await writer.drain()
        return True

    job = JobSpec(job_id=4, arrival_s=0.0, first_prompt=(1, 2, 3), tool_outputs=((7, 8),),
                  tool_s=(0.25,), completion_tokens=3, tool_names=("grep",))  # fmt: skip
    prompts = [(1, 2, 3), (1, 2, 3, 10, 11, 12, 7, 8)]  # turn 2: turn 1's output, the tool's

    async def go() -> list[tuple[bytes, bytes]]:
        async with RawServer(capture) as url:
            client = AgentClient(url, "k", ClientOptions(model="m", request_timeout_s=5))
            res = await client.run(Workload(jobs=[job], jps=1.0, seed=0))
            assert [t.status for t in res.turns] == ["ok", "ok"], res.turns
            # the same turns through AsyncOpenAI.post, as the client sent them before
            api = AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0,
                              http_client=httpx.AsyncClient(),  # type: ignore[arg-type]
                              timeout=openai.Timeout(5, read=None))  # fmt: skip
            for turn, prompt in enumerate(prompts, 1):
                hint = Hint.for_turn("4", turn, 2, job.tool_after(turn), job.tool_name(turn))
                body = {"model": "m", "stream": True, "prompt": prompt, "max_tokens": 3,
                        "stream_options": USAGE, "ignore_eos": True, "return_token_ids": True,
                        **extra_body(hint)}  # fmt: skip
                r = await api.post(  # type: ignore[call-overload]
                    "/completions", cast_to=httpx.Response, body=body,
                    options={"headers": RAW_RESPONSE}, stream=True, stream_cls=AsyncStream[object],
                )  # fmt: skip
                await r.aclose()
        return seen

    def headers(head: bytes) -> dict[bytes, bytes]:
        lines = head.split(b"\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines)}

    seen = asyncio.run(go())
    assert len(seen) == 4
    for (head, body), (want_head, want_body) in zip(seen[:2], seen[2:], strict=True):
        assert body == want_body
        assert head.split(b"\r\n")[0] == want_head.split(b"\r\n")[0]  # POST /v1/completions
        assert headers(head) == headers(want_head)
    assert json.loads(seen[1][1])["prompt"] == list(prompts[1])


def test_prompt_echo_skipped_never_misread():
    """loads_chunk parses a chunk less vLLM's echo of the prompt ids, and only where that is
    surely a flat array of ids; anything else is parsed whole."""
    from harness.wire import json_loads, loads_chunk

    def compact(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def echo_nulled(obj):
        if isinstance(obj, dict):
            return {k: None if k == "prompt_token_ids" and isinstance(v, list) and
                    all(type(x) is int and x >= 0 for x in v) else echo_nulled(v)
                    for k, v in obj.items()}  # fmt: skip
        return [echo_nulled(x) for x in obj] if isinstance(obj, list) else obj

    first = {"id": "c", "object": "text_completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "text": " t5", "logprobs": None, "finish_reason": None,
                          "stop_reason": None, "prompt_token_ids": list(range(3000)),
                          "token_ids": [5]}]}  # fmt: skip
    got = loads_chunk(compact(first))
    assert got == echo_nulled(first) and got["choices"][0]["token_ids"] == [5]
    cases = [
        first,
        {"choices": [{"token_ids": [9], "prompt_token_ids": [4, 5]}]},  # ids after: intact
        {"choices": [{"prompt_token_ids": []}, {"prompt_token_ids": [1], "token_ids": [2]}]},
        {"text": '"prompt_token_ids":[1]', "token_ids": [3]},  # in a string: escaped, kept
        {'x"prompt_token_ids': [1, 2], "token_ids": [3]},  # a longer key: parsed whole
        {"prompt_token_ids": [[1, 2], 3], "token_ids": [4]},  # nested: parsed whole
        {"prompt_token_ids": [-1, 2], "token_ids": [4]},  # a sign: parsed whole
        {"prompt_token_ids": [1.5], "usage": {"prompt_tokens": 1}},
        {"prompt_token_ids": None, "token_ids": [1]},
    ]
    for obj in cases:
        data = compact(obj)
        assert loads_chunk(data) == echo_nulled(obj), data
    # written with spaces (not vLLM's way): parsed whole, echo and all
    spaced = json.dumps(first).encode()
    assert loads_chunk(spaced) == first
    # json_loads is json.loads, whatever the bytes
    for data in (b'{"a":1}', b' {"a": 1} ', b"\xef\xbb\xbf[1]", b'"x"', b"3"):
        assert json_loads(data) == json.loads(data), data
    for bad in (b'{"a":1}{}', b"nul", b"", b"\xff"):
        try:
            json.loads(bad)
        except ValueError as e:
            want: object = type(e)
        try:
            json_loads(bad)
        except ValueError as e:
            assert type(e) is want, bad
        else:
            raise AssertionError(bad)


def test_stream_with_vllm_shaped_chunks():
    """Chunks as vLLM writes them (compact JSON, the prompt ids echoed in the first): the turn
    records read as with any other shape."""

    def compact(n: int) -> tuple[int, list[bytes]]:
        def chunk(**kw) -> bytes:
            return b"data: " + json.dumps({"id": "x", "object": "text_completion", **kw},
                                          separators=(",", ":")).encode()  # fmt: skip

        first = chunk(choices=[{"index": 0, "text": "a", "prompt_token_ids": [1, 2, 3],
                                "token_ids": [10 * n]}])  # fmt: skip
        toks = [chunk(choices=[{"index": 0, "text": "a", "token_ids": [10 * n + i]}])
                for i in (1, 2)]  # fmt: skip
        usage = chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 3,
                                         "prompt_tokens_details": {"cached_tokens": 2}},
                      )  # fmt: skip
        return 200, [b"\n\n".join([first, *toks, usage, b"data: [DONE]"]) + b"\n\n"]

    res, srv = _run(compact)
    assert [t.status for t in res.turns] == ["ok", "ok"], res.turns
    t = res.turns[0]
    assert t.completion_tokens == 3 and t.server_prompt_tokens == 3 and t.cached_tokens == 2
    assert res.turns[1].prompt_tokens == 3 + 3 + 1 and srv.conns == 1
