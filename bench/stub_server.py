"""A minimal OpenAI-compatible stub server for the client benchmarks (``client_lag.py``,
``client_peers.py``), and the pinning of a benchmark's processes to cores.

    python bench/stub_server.py --delay-ms 50 --itl-ms 10 [--batched] [--core 1]

A raw asyncio HTTP/1.1 server (uvloop) answering ``POST /v1/completions`` (``stream: true``)
with Server-Sent Events in vLLM's completions chunk format: after a fixed delay (time to first
token) the first chunk, which echoes the prompt's ids in ``prompt_token_ids`` as vLLM does when
``return_token_ids`` is set, then one chunk per token ``--itl-ms`` apart (``token_ids`` in the
choice, ``finish_reason: length`` on the last), a usage chunk with
``prompt_tokens_details.cached_tokens`` and ``data: [DONE]``, HTTP/1.1 chunked as uvicorn sends
it. ``--batched`` puts every stream's tokens on one global tick, as a batched engine emits
them (bursts of chunks). It also logs each request's arrival (``GET /kvb/log``) for
``client_peers.py``. It prints its port on its first line of output (``start_stub`` reads it).
Not a fake of vLLM for tests: a load generator's counterpart whose own cost is known and small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time


def assign_cores(cores: list[int], workers: int, stub_cores: int = 1) -> tuple[str, str]:
    """The client's and the stub's cores, as lists for ``--core`` ("0,1"; "" = unpinned).

    The stub takes the last ``stub_cores`` cores and the client (its process and its workers,
    which inherit the set) the first ``workers`` of the others. Where fewer are left than
    workers, the client takes the first ``workers`` cores of all and shares the last of them
    with the stub: on 2 cores, 1 worker is client {0} / stub {1}, 2 workers client {0, 1} /
    stub {1}; on 16 cores, 8 workers are client {0..7} / stub {15}."""
    if len(cores) < 2:
        return "", ""
    stub, rest = cores[-stub_cores:], cores[:-stub_cores]
    client = rest[:workers] if len(rest) >= workers else cores[:workers]
    return ",".join(map(str, client)), ",".join(map(str, stub))


def claim_core(core: str | None, prio: str) -> None:
    """Pin this process (and the children it starts later) to the cores in ``core`` ("0,1");
    with ``prio`` "fifo" or "nice", also run it ahead of the machine's other work (SCHED_FIFO
    priority 10 / nice -10; root or CAP_SYS_NICE), so that on a shared machine the process has
    its cores as "on one core" means."""
    if core:
        os.sched_setaffinity(0, {int(c) for c in core.split(",")})
    if prio == "fifo":
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    elif prio == "nice":
        os.nice(-10)


_CL = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_PROMPT = re.compile(rb'"prompt"\s*:\s*\[([^\]]*)\]')
_MAXTOK = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
_TOKIDS = re.compile(rb'"return_token_ids"\s*:\s*true')
_HINT = re.compile(rb'"kvb_job_id"\s*:\s*"(\d+)"\s*,\s*"kvb_turn"\s*:\s*(\d+)')
_TEXT = re.compile(rb'"prompt"\s*:\s*"([^"]*)"')  # a peer's text prompt (words: no quotes)
_RID = re.compile(rb"\r\nx-request-id:[ \t]*([^\r]*)", re.I)
_MODELS = (
    b'{"object":"list","data":[{"id":"model","object":"model","root":"model",'
    b'"owned_by":"stub","max_model_len":65536}]}'
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


_CHOICE = (
    b'{"index":0,"text":" t%d","logprobs":null,"finish_reason":%s,"stop_reason":null,'
    b'%s"token_ids":[%d]}'
)
_USAGE = (
    b'"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d,'
    b'"prompt_tokens_details":{"cached_tokens":%d}}'
)


def _chunk(payload: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk (uvicorn streams vLLM's answers chunked)."""
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stub(asyncio.Protocol):
    """HTTP/1.1 keep-alive; one request at a time per connection (httpx does not pipeline).

    Every completion request is logged as (arrival, job id, turn, x-request-id): the arrival is
    ``time.monotonic()`` when its first byte came in (the clock of ``time.perf_counter`` in the
    client processes); ``GET /kvb/log`` answers the log as JSON and empties it. ``GET
    /v1/models`` and ``GET /health`` answer as vLLM does, for the peers' checks."""

    n = 0
    seen: dict[tuple[int, int], int] = {}
    log: list[tuple[float, int, int, str]] = []

    def __init__(self, delay_s: float, itl_s: float, batched: bool, fault: str) -> None:
        self.delay_s, self.itl_s, self.batched, self.fault = delay_s, itl_s, batched, fault
        self.buf = bytearray()
        self.t_in = 0.0  # when the first byte of the request in self.buf came
        self.tr: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.tr = transport

    def connection_lost(self, exc) -> None:
        self.tr = None

    def data_received(self, data: bytes) -> None:
        if not self.buf:
            self.t_in = time.monotonic()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _CL.search(self.buf, 0, end + 2)
            size = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + size:
                return
            head, body = bytes(self.buf[:end]), bytes(self.buf[end + 4 : end + 4 + size])
            del self.buf[: end + 4 + size]
            t_in, self.t_in = self.t_in, time.monotonic()
            self._request(head, body, t_in)

    def _error(self, status: bytes, message: bytes, kind: bytes) -> None:
        """An OpenAI-style JSON error answer, e.g. status b"404 Not Found"."""
        msg = b'{"error":{"message":"%s","type":"%s","code":%s}}' % (message, kind, status[:3])
        self.tr.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (status, len(msg), msg))

    def _json(self, body: bytes) -> None:
        self.tr.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def _get(self, head: bytes) -> None:
        path = head.split(b" ", 2)[1]
        if path == b"/v1/models":
            self._json(_MODELS)
        elif path == b"/health":
            self._json(b"{}")
        elif path == b"/kvb/log":
            log, _Stub.log = _Stub.log, []
            self._json(json.dumps(log).encode())
        else:
            self._error(b"404 Not Found", b"not found", b"NotFoundError")

    def _request(self, head: bytes, body: bytes, t_in: float) -> None:
        if head.startswith(b"GET "):
            self._get(head)
            return
        _Stub.n += 1
        if not head.startswith(b"POST /v1/completions "):
            self._error(b"404 Not Found", b"not found", b"NotFoundError")
            return
        m = _HINT.search(body)
        job, turn = (int(m.group(1)), int(m.group(2))) if m else (-1, 0)
        m = _RID.search(head)
        _Stub.log.append((t_in, job, turn, m.group(1).decode() if m else ""))
        fault = self._fault(body)
        if fault == "drop":  # close before any byte of the answer: the client retries
            self.tr.close()
            return
        if fault == "500":
            self._error(b"500 Internal Server Error", b"stub fault", b"InternalServerError")
            return
        m = _PROMPT.search(body)
        ids = m.group(1).strip() if m else b""
        n_prompt = ids.count(b",") + 1 if ids else 0
        if not m and (m := _TEXT.search(body)):  # a text prompt: words (bench/peer_tokenizer)
            n_prompt = m.group(1).count(b" ") + 1
        m = _MAXTOK.search(body)
        n_out = int(m.group(1)) if m else 16
        echo = b'"prompt_token_ids":[%s],' % ids if _TOKIDS.search(body) else b""
        rid = b"cmpl-%d" % _Stub.n
        pre = b'{"id":"%s","object":"text_completion","created":%d,"model":"model",' % (
            rid,
            int(time.time()),
        )
        self.tr.write(_SSE_HEAD)
        if fault == "hang":  # headers, then nothing: the client's per-request time-out
            return
        t = self.loop.time() + self.delay_s
        if self.batched:  # on the next global tick
            t = math.ceil(t / self.itl_s) * self.itl_s
        st = {
            "pre": pre,
            "echo": echo,
            "i": 0,
            "n_out": n_out,
            "n_prompt": n_prompt,
            "tr": self.tr,
            "cut": fault == "cut",
            "t": t,
        }
        self.loop.call_at(t, self._token, st)

    def _fault(self, body: bytes) -> str:
        """``--fault KIND:K`` (for checks of the client's error rows, not for timings): the
        turns with (job id + turn) % K == 0 fail as KIND says, "drop" on their first attempt
        only (a stale connection: the client retries), the other kinds on every attempt."""
        if not self.fault:
            return ""
        kind, _, every = self.fault.partition(":")
        m = _HINT.search(body)
        key = (int(m.group(1)), int(m.group(2))) if m else (_Stub.n, 0)
        if sum(key) % int(every or 1):
            return ""
        self.seen[key] = self.seen.get(key, 0) + 1
        return "" if kind == "drop" and self.seen[key] > 1 else kind.removesuffix("all")

    def _token(self, st: dict) -> None:
        tr = st["tr"]
        if tr.is_closing():
            return
        i, n_out = st["i"], st["n_out"]
        if st["cut"] and i == 1:  # a byte came back, then the connection died
            tr.close()
            return
        last = i == n_out - 1
        choice = _CHOICE % (
            1000 + i,
            b'"length"' if last else b"null",
            st["echo"] if i == 0 else b"",
            1000 + i,
        )
        out = _chunk(st["pre"] + b'"choices":[' + choice + b"]}")
        if last:
            n = st["n_prompt"]
            usage = _USAGE % (n, n + n_out, n_out, max(0, (n - 1) // 16 * 16))
            out += (
                _chunk(st["pre"] + b'"choices":[],' + usage + b"}")
                + _chunk(b"[DONE]")
                + b"0\r\n\r\n"
            )
            tr.write(out)
            return
        tr.write(out)
        st["i"], st["t"] = i + 1, st["t"] + self.itl_s
        self.loop.call_at(st["t"], self._token, st)


def serve(
    port: int, delay_s: float, itl_s: float, batched: bool, fault: str, core: str | None, prio: str
) -> None:
    claim_core(core, prio)
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(
            lambda: _Stub(delay_s, itl_s, batched, fault), "127.0.0.1", port, backlog=4096
        )
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()

    uvloop.run(main())


def start_stub(
    delay_ms: float,
    itl_ms: float,
    fault: str = "",
    core: str | None = None,
    batched: bool = False,
    prio: str = "normal",
):
    """Start the stub in its own process; return (process, base URL)."""
    argv = [
        sys.executable,
        __file__,
        "--delay-ms",
        str(delay_ms),
        "--itl-ms",
        str(itl_ms),
        "--priority",
        prio,
    ]
    if batched:
        argv.append("--batched")
    if fault:
        argv += ["--fault", fault]
    if core:
        argv += ["--core", core]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, default=50.0, help="time to first token")
    p.add_argument("--itl-ms", type=float, default=10.0, help="time between tokens")
    p.add_argument("--batched", action="store_true", help="all streams' tokens on one tick")
    p.add_argument("--fault", default="", help="KIND:K, see _Stub._fault")
    p.add_argument("--core", help="pin to these cores (\"0,1\")")
    p.add_argument("--priority", choices=["normal", "nice", "fifo"], default="normal")
    a = p.parse_args()
    serve(0, a.delay_ms / 1000, a.itl_ms / 1000, a.batched, a.fault, a.core, a.priority)


if __name__ == "__main__":
    main()
