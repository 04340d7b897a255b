"""What the agent client writes and reads on the wire, without openai's per-request path:
request bodies as openai writes them (its JSON, the prompt as token ids) and the streamed
response as server-sent events whose data are vLLM's completion chunks.

Each piece was measured against what it replaces (bench/README.md); where its fast path does
not surely apply it falls back to what it replaced (``json.loads``, the whole parse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

# the header openai's with_streaming_response sent (the server ignores it): still sent, so that
# the request is the one it was
RAW_RESPONSE = {"X-Stainless-Raw-Response": "stream"}
USAGE = {"include_usage": True}

# JSON as openai writes a request's body (openai._utils._json.openapi_dumps), as bytes
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(obj: Any) -> bytes:
    return _encode(obj).encode()


def ids_json(ids: Sequence[int]) -> bytes:
    """``ids`` as a JSON array, as openai would write them (``[1,2,3]``)."""
    return dumps(tuple(ids))


def extend_ids_json(encoded: bytes, more: Sequence[int]) -> bytes:
    """``ids_json(ids + more)``, where ``encoded`` is ``ids_json(ids)``: only ``more`` is
    encoded."""
    if not more:
        return encoded
    if encoded == b"[]":
        return ids_json(more)
    return b"".join((encoded[:-1], b",", ids_json(more)[1:]))


# json's C scanner (what JSONDecoder.raw_decode calls): (value, end) from a str and a start
_scan_json: Callable[[str, int], tuple[Any, int]]
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_loads(data: bytes) -> Any:
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


def loads_chunk(data: bytes) -> Any:
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
        return json_loads(data)
    parts: list[bytes] = []
    start = 0
    while i >= 0:
        lo = i + len(_ECHO)
        hi = data.find(b"]", lo)
        if hi < 0 or (i and data[i - 1] == 0x5C) or data[lo:hi].translate(None, _ID_BYTES):
            return json_loads(data)  # not surely a flat array of ids: parsed whole
        parts += (data[start : lo - 1], b"null")
        start = hi + 1
        i = data.find(_ECHO, start)
    parts.append(data[start:])
    return json_loads(b"".join(parts))


class SSE:
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
