"""The agent client against a server that stalls or drops connections (no vLLM needed): a
small HTTP server speaks the streaming completions protocol and misbehaves on cue, per job and
turn. Each stalled request ends at ``request_timeout_s`` (status ``timeout``, whether it stalled
before the first byte or mid-stream; never retried), a connection dropped before any byte is
retried up to ``max_retries`` times, and the turns and jobs records say so. The real server
stalled by SIGSTOP is in test_kill_and_hang.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from harness import records
from harness.client import AgentClient, ClientOptions
from workloads.agent import JobSpec, Workload

TIMEOUT_S = 2.0  # the bounds below leave a loaded CI machine 1 s of scheduling delay
# (job, turn) -> what the server does on each attempt; anything else is answered normally
CUES = {
    (0, 1): ["drop", "ok"],  # a stale connection: retried once, then ok
    (1, 2): ["stall_mid"],  # two tokens, then silence: timeout mid-stream
    (2, 1): ["stall"],  # headers never come: timeout before the first byte
    (4, 1): ["drop", "drop", "drop"],  # dropped every time: gives up after max_retries
}


class FakeServer:
    """/v1/completions with ``stream: true``, one request per connection (Connection: close)."""

    def __init__(self) -> None:
        self.attempts: Counter[tuple[int, int]] = Counter()
        self.stalled: list[asyncio.Event] = []
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for ev in self.stalled:
            ev.set()
        await asyncio.sleep(0.1)  # the stalled handlers close their connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))  # fmt: skip
            body = json.loads(await reader.readexactly(length))
            hint = body["vllm_xargs"]
            key = (int(hint["kvb_job_id"]), int(hint["kvb_turn"]))
            self.attempts[key] += 1
            cues = CUES.get(key, [])
            cue = cues[self.attempts[key] - 1] if self.attempts[key] <= len(cues) else "ok"
            if cue == "drop":
                return  # closed with no byte back
            if cue == "stall":
                await self._stall()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"connection: close\r\n\r\n")  # fmt: skip
            n = int(body["max_tokens"])
            for i in range(n):
                if cue == "stall_mid" and i == 2:
                    await writer.drain()
                    await self._stall()
                    return
                chunk = {"id": "x", "object": "text_completion", "model": "m", "created": 0,
                         "choices": [{"index": 0, "text": "a", "token_ids": [100 + i],
                                      "finish_reason": None}]}  # fmt: skip
                writer.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await writer.drain()
                await asyncio.sleep(0.005)
            usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": n,
                     "total_tokens": len(body["prompt"]) + n}  # fmt: skip
            final = {"id": "x", "object": "text_completion", "model": "m", "created": 0,
                     "choices": [], "usage": usage}  # fmt: skip
            writer.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stall(self) -> None:
        ev = asyncio.Event()
        self.stalled.append(ev)
        await ev.wait()  # until the test ends; the client must give up first


def _workload(n_jobs: int = 5, n_turns: int = 3) -> Workload:
    jobs = [JobSpec(job_id=j, arrival_s=0.05 * j, first_prompt=tuple(range(10, 42)),
                    tool_outputs=tuple((7, 8, 9) for _ in range(n_turns - 1)),
                    tool_s=tuple(0.05 for _ in range(n_turns - 1)), completion_tokens=6)
            for j in range(n_jobs)]  # fmt: skip
    return Workload(jobs=jobs, jps=20.0, seed=0)


def test_stalls_time_out_and_dropped_connections_are_retried_and_recorded(tmp_path: Path):
    async def go():
        async with FakeServer() as url:
            client = AgentClient(url, "key", ClientOptions(model="m", request_timeout_s=TIMEOUT_S,
                                                           max_retries=2))  # fmt: skip
            t0 = time.monotonic()
            res = await client.run(_workload())
            return res, time.monotonic() - t0

    res, took = asyncio.run(go())
    assert took < 3 * TIMEOUT_S + 4, f"the client took {took:.1f} s: it waited on a stall"
    records.write_table(records.turn_rows(res.turns), records.TURNS, tmp_path / "turns.parquet")
    records.write_table(records.job_rows(res.jobs), records.JOBS, tmp_path / "jobs.parquet")
    turns = pq.read_table(tmp_path / "turns.parquet").to_pandas().set_index(["job_id", "turn"])
    jobs = pq.read_table(tmp_path / "jobs.parquet").to_pandas().set_index("job_id")

    # a stale connection: retried, then ok, and the retry is counted
    assert turns.loc[(0, 1), "status"] == "ok" and turns.loc[(0, 1), "retries"] == 1
    assert jobs.loc[0, "status"] == "ok"
    # mid-stream stall: tokens came, then nothing; it ends at the time-out, not retried
    mid = turns.loc[(1, 2)]
    assert mid.status == "timeout" and mid.retries == 0, mid.to_dict()
    assert mid.error == f"no complete answer in {TIMEOUT_S:g} s"
    assert mid.first_token_s == mid.first_token_s  # not null: bytes came before the stall
    assert TIMEOUT_S - 0.05 <= mid.last_token_s - mid.sent_s <= TIMEOUT_S + 1.0
    assert turns.loc[(1, 3), "status"] == "not_sent"
    assert "an earlier turn of the job failed" in turns.loc[(1, 3), "error"]
    assert jobs.loc[1, "status"] == "failed" and jobs.loc[1, "turns_done"] == 1
    assert jobs.loc[1, "jct_s"] != jobs.loc[1, "jct_s"]  # null: a failed job has no JCT
    # a stall before the first byte
    pre = turns.loc[(2, 1)]
    assert pre.status == "timeout" and pre.first_token_s != pre.first_token_s  # null
    assert TIMEOUT_S - 0.05 <= pre.last_token_s - pre.sent_s <= TIMEOUT_S + 1.0
    assert jobs.loc[2, "status"] == "failed" and jobs.loc[2, "turns_done"] == 0
    # every attempt dropped: max_retries retries, then an error row
    gave_up = turns.loc[(4, 1)]
    assert gave_up.status == "error" and gave_up.retries == 2, gave_up.to_dict()
    assert gave_up.error.startswith("gave up after 2 retries")
    # the untouched job, and the counts
    assert (turns.loc[3].status == "ok").all() and jobs.loc[3, "status"] == "ok"
    assert int(turns.retries.sum()) == 3
    assert sorted(turns.status.value_counts().items()) == [
        ("error", 1), ("not_sent", 1 + 2 + 2), ("ok", 3 + 1 + 3), ("timeout", 2)]
