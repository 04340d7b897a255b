"""A real vLLM server on the CPU engine for the plugin tests, and a tiny client for it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 32000,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "hidden_act": "silu",
}
BLOCK = 128  # tokens per KV block on the CPU engine
NUM_BLOCKS = 56  # --num-gpu-blocks-override: a 7K-token KV cache, so there is pressure
STARTUP_S = 240


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    stats_dir: Path

    def post(self, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.url}/v1/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    def stats(self, policy: str) -> dict[str, Any]:
        return json.loads((self.stats_dir / f"{policy}.json").read_text())

    def model(self) -> str:
        with urllib.request.urlopen(f"{self.url}/v1/models", timeout=10) as r:
            return json.loads(r.read())["data"][0]["id"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, args: list[str], env: dict[str, str]) -> Server:
    model = tmp / "tiny"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(TINY_LLAMA))
    stats_dir = Path(env.get("KVBENCH_PLUGIN_STATS_DIR", tmp / "stats"))
    port, log = free_port(), tmp / "server.log"
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(port), "--load-format", "dummy",
            "--skip-tokenizer-init", "--enable-prompt-tokens-details",
            "--num-gpu-blocks-override", str(NUM_BLOCKS), "--max-model-len", "4096",
            "--gpu-memory-utilization", "0.3", "--enforce-eager", *args]
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **env}
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log, stats_dir)
    wait_healthy(server)
    return server


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"vLLM exited at start; see {server.log}:\n"
                               + server.log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    stop(server)
    raise TimeoutError(f"vLLM not healthy after {STARTUP_S}s; see {server.log}")


def stop(server: Server) -> None:
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


class Job:
    """A multi-turn conversation of random token ids; each turn extends the last context."""

    def __init__(self, server: Server, job_id: str | None, seed: int, first: int = 2600):
        self.server, self.job_id = server, job_id
        self.rng = random.Random(seed)
        self.context = self._tokens(first)
        self.turn = 0

    def _tokens(self, n: int) -> list[int]:
        return [self.rng.randrange(100, 31000) for _ in range(n)]

    def send(self, *, tool_s: float = 0.0, last: bool = False, new_tokens: int = 0,
             max_tokens: int = 4, priority: int | None = None,
             tool: str = "") -> dict[str, Any]:
        """Send the next turn; returns usage plus ``prev_context`` (tokens of the last turn)
        and ``done`` (monotonic time the reply came). ``priority``: vLLM's request priority
        (lower first; the server must run ``--scheduling-policy priority``); ``tool``: the
        name of the tool that follows (the hint's ``kvb_tool``)."""
        from harness.hints import Hint, extra_body

        prev = len(self.context)
        if self.turn:
            self.context += self._tokens(new_tokens)
        self.turn += 1
        body: dict[str, Any] = {"model": str(self.server.url), "prompt": self.context,
                                "max_tokens": max_tokens, "ignore_eos": True,
                                "return_token_ids": True}
        body["model"] = self._model()
        if priority is not None:
            body["priority"] = priority
        if self.job_id is not None:
            hint = Hint.for_turn(self.job_id, self.turn, self.turn if last else 99, tool_s,
                                 tool)
            body.update(extra_body(hint))
        out = self.server.post(body)
        self.context += list(out["choices"][0].get("token_ids") or [])
        usage = out["usage"]
        return {"cached": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                "prompt": usage["prompt_tokens"], "prev_context": prev,
                "done": time.monotonic()}

    def _model(self) -> str:
        return self.server.model()


class InBackground:
    """Run ``fn`` in a thread now; ``result()`` joins it and returns (or raises) its value."""

    def __init__(self, fn, *args: Any, **kwargs: Any):
        import threading

        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = fn(*args, **kwargs)
            except BaseException as e:  # re-raised in result()
                self._out["error"] = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = 120) -> Any:
        self._thread.join(timeout)
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]



class Blocker:
    """An unhinted request that decodes until ``stop()`` (or 3,000 tokens, over 20 s on the CPU
    engine), started in the background; with ``--max-num-seqs 1`` the others wait behind it.

    It streams, so ``wait_running()`` knows when the engine is decoding it: its first token
    has come back. The tests waited on ``vllm:num_requests_running == 1`` before, a gauge
    that says some request runs, not which. Once in CI the ordering and the expiry tests
    failed together, as if the turns sent after it had not queued behind the blocker or the
    pins had gone; not reproduced here (2 cores under three busy loops), so those tests'
    failures now also say when the queue formed and what the policy admitted.

    ``stop()`` closes the connection: vLLM aborts a request whose client went away
    (``with_cancellation``), so the queue behind it moves on at a moment the test chooses
    rather than one guessed from a decode rate measured on shared cores (which flaked).
    """

    def __init__(self, server: Server, seed: int, tokens: int = 3000):
        import http.client
        import threading
        from urllib.parse import urlsplit

        url = urlsplit(server.url)
        body = {"model": server.model(), "max_tokens": tokens, "ignore_eos": True,
                "stream": True, "prompt": Job(server, None, seed, first=64).context}
        self._conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        self._conn.connect()
        self._status: dict[str, Any] = {}
        self._running = threading.Event()

        def run() -> None:
            try:
                self._conn.request("POST", "/v1/completions", json.dumps(body),
                                   {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                self._status["code"] = response.status
                for line in response:  # server-sent events until the end or stop()
                    if line.startswith(b"data: {"):
                        self._running.set()
            except (OSError, ValueError, http.client.HTTPException) as e:  # closed by stop()
                self._status["error"] = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait_running(self, timeout: float = 30) -> bool:
        """True once the engine has produced the blocker's first token (it holds the one
        running slot from then on, until ``stop()``)."""
        return self._running.wait(timeout)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Abort the request (if it still runs) and wait until the server has dropped it."""
        import socket

        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(30)
        self._conn.close()


def blocker(server: Server, seed: int) -> Blocker:
    return Blocker(server, seed)


def churn(server: Server, n: int, seed: int, tokens: int = 2600) -> None:
    """Unhinted traffic that fills the KV cache with distinct prompts."""
    for i in range(n):
        Job(server, None, seed + i, first=tokens).send(max_tokens=2)


def wait_for(pred, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def tool_gap(server: Server, policy: str, job_id: str, tool_s: float, seed: int) -> dict:
    """One hinted turn, a tool gap filled with unhinted traffic, then the next turn.

    Returns what was seen during the gap (``during``: snapshot job entry and KV usage right
    after the offload), just before the next turn (``before``), and the next turn itself
    (``turn2``, ``admission``), plus the unhinted control job's second turn (``control``).
    """
    job, control = Job(server, job_id, seed), Job(server, None, seed + 1)
    job.send(tool_s=tool_s)
    t_end = time.monotonic()
    control.send()
    wait_for(lambda: server.stats(policy)["jobs"].get(job_id, {}).get("state") == "host", 5)
    during = {"job": server.stats(policy)["jobs"].get(job_id),
              "kv_usage": server.metrics()["vllm:kv_cache_usage_perc"]}
    churn(server, 3, seed=seed + 100)
    churn_done = time.monotonic() - t_end
    time.sleep(max(0.0, tool_s - 0.3 - (time.monotonic() - t_end)))
    before = server.stats(policy)["jobs"].get(job_id)
    time.sleep(max(0.0, tool_s - (time.monotonic() - t_end)))
    turn2 = job.send(last=True, new_tokens=256)
    rows = [a for a in server.stats(policy)["admissions"] if a["job"] == job_id]
    return {"during": during, "before": before, "turn2": turn2, "admission": rows[-1],
            "control": control.send(new_tokens=256), "churn_s": churn_done}
