"""The server guard without a server: the ASGI key check (harness/guard.py), where a server
may listen (host, expose), the command every policy gets, and the modes of the files kvbench
writes (records writers, submitit's batch scripts). The real server is
tests/harness/test_server_guard.py."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from harness import guard, records
from harness.errors import ConfigError
from harness.policies.continuum import SHIM_DIR
from harness.server import Server, build_command
from launch import plan
from launch.submit import tighten_submission_files

KEY = "k3y-for-tests"


def call(scope: dict, key: str = KEY) -> list[dict]:
    """Run ``scope`` through a Guard around an app that answers 200; the messages sent."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b""}

    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    asyncio.run(guard.Guard(app, key=key)(scope, receive, send))
    return sent


def http(path: str, method: str = "GET", auth: bytes | None = None, **extra) -> dict:
    headers = [(b"host", b"x")] + ([(b"authorization", auth)] if auth is not None else [])
    return {"type": "http", "method": method, "path": path, "headers": headers, **extra}


def status(sent: list[dict]) -> int:
    return sent[0]["status"]


@pytest.mark.parametrize("path,method", [
    ("/reset_prefix_cache", "POST"), ("/server_info", "GET"), ("/metrics", "GET"),
    ("/v1/models", "GET"), ("/collective_rpc", "POST"), ("/is_sleeping", "GET"),
    ("/openapi.json", "GET"), ("/health", "POST"), ("/health/", "GET"), ("/", "GET"),
    ("/v1/completions", "OPTIONS"),
])  # fmt: skip
def test_every_path_needs_the_key(path, method):
    assert status(call(http(path, method))) == 401
    assert status(call(http(path, method, auth=b"Bearer wrong"))) == 401
    assert status(call(http(path, method, auth=f"Basic {KEY}".encode()))) == 401
    assert status(call(http(path, method, auth=f"Bearer {KEY}".encode()))) == 200
    assert status(call(http(path, method, auth=f"bearer  {KEY} ".encode()))) == 200


def test_health_is_open_and_the_401_is_json():
    assert status(call(http("/health"))) == 200
    assert status(call(http("/health", "HEAD"))) == 200
    assert status(call(http("/api/health", root_path="/api"))) == 200
    sent = call(http("/reset_prefix_cache", "POST"))
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert sent[1]["body"] == b'{"error":"Unauthorized"}'


def test_websockets_need_the_key_and_lifespan_passes():
    ws = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    assert call(ws) == [{"type": "websocket.close", "code": 1008}]
    assert call({**ws, "path": "/health"}) == [{"type": "websocket.close", "code": 1008}]
    ws["headers"] = [(b"authorization", f"Bearer {KEY}".encode())]
    assert status(call(ws)) == 200
    assert status(call({"type": "lifespan"})) == 200


def test_no_key_no_server(monkeypatch):
    monkeypatch.delenv(guard.KEY_ENV, raising=False)
    with pytest.raises(RuntimeError, match="refusing to serve unguarded"):
        guard.Guard(lambda *a: None)
    monkeypatch.setenv(guard.KEY_ENV, KEY)
    assert guard.Guard(lambda *a: None).allows(http("/x", auth=f"Bearer {KEY}".encode()))


def test_the_fork_loads_the_guard_by_its_path():
    """The Continuum fork's interpreter has only continuum_site on its path."""
    code = ("import sys, kvbench_guard; g = kvbench_guard.Guard(None, key='k'); "
            "assert not any(m == 'harness' or m.startswith('harness.') for m in sys.modules); "
            "print(type(g).__name__)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(SHIM_DIR)}, cwd="/")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Guard"


def test_client_keys_by_url():
    guard.register("http://127.0.0.1:1234/", KEY)
    try:
        assert guard.auth_headers("http://127.0.0.1:1234") == {"Authorization": f"Bearer {KEY}"}
        assert guard.auth_headers("http://127.0.0.1:1234", "other")["Authorization"].endswith(
            "other")
        assert guard.auth_headers("http://127.0.0.1:9") == {}
    finally:
        guard.forget("http://127.0.0.1:1234")
    assert guard.auth_headers("http://127.0.0.1:1234") == {}


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.0.2.7", False),
])  # fmt: skip
def test_loopback(host, loopback):
    assert guard.is_loopback(host) is loopback


def test_bad_hosts_do_not_resolve():
    for bad in ("no-such-host.invalid", "", " 127.0.0.1"):
        with pytest.raises(socket.gaierror):
            guard.is_loopback(bad)


def test_client_host():
    assert guard.client_host("0.0.0.0") == "127.0.0.1"
    assert guard.client_host("::") == "[::1]"
    assert guard.client_host("::1") == "[::1]"
    assert guard.client_host("localhost") == "localhost"


# Planning: host and expose.


def plan_cfg(tmp_path, *over: str):
    p = plan.make([f"results_dir={tmp_path}", "policy=[fcfs]", "jps=[1]", *over],
                  today="20260101")  # fmt: skip
    return p.configs[p.cells[0]]


def test_host_beyond_loopback_needs_expose(tmp_path):
    with pytest.raises(ConfigError) as e:
        plan_cfg(tmp_path, "host=0.0.0.0")
    msg = str(e.value)
    assert "\n" not in msg and "expose=true" in msg and "host=0.0.0.0" in msg
    assert "OpenAI API" in msg and "API key" in msg
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"
    cfg = plan_cfg(tmp_path, "host=0.0.0.0", "expose=true")
    assert cfg.host == "0.0.0.0" and cfg.expose is True


@pytest.mark.parametrize("host", ["127.0.0.1", "'::1'", "localhost"])
def test_loopback_hosts_plan(tmp_path, host):
    cfg = plan_cfg(tmp_path, f"host={host}")
    assert cfg.expose is False


@pytest.mark.parametrize("bad", ["no-such-host.invalid", "''"])
def test_a_bad_host_is_one_line_at_planning(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"^host=.* does not resolve here") as e:
        plan_cfg(tmp_path, f"host={bad}")
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir()), "nothing may be written for bad input"


def test_the_server_refuses_what_planning_refuses(tmp_path):
    cfg = plan_cfg(tmp_path)
    cfg.host = "0.0.0.0"
    with pytest.raises(ConfigError, match="expose=true"):
        Server(cfg, tmp_path / "server.log")
    cfg.expose = True
    srv = Server(cfg, tmp_path / "server.log")
    assert srv.exposure and f"0.0.0.0:{srv.port}" in srv.exposure
    assert "per-cell API key" in srv.exposure
    assert srv.command.env["KVBENCH_EXPOSED"] == srv.exposure  # recorded in the manifest
    assert srv.url == f"http://127.0.0.1:{srv.port}"
    cfg.host, cfg.expose = "::1", False
    srv = Server(cfg, tmp_path / "server.log")
    assert srv.exposure is None and srv.url == f"http://[::1]:{srv.port}"
    assert "KVBENCH_EXPOSED" not in srv.command.env


def test_every_server_gets_the_guard(tmp_path):
    """The full commands per policy are golden files (tests/harness/test_policies.py)."""
    from harness.policies.base import Policy
    from harness.policies.continuum import Continuum

    argv = build_command(plan_cfg(tmp_path)).argv
    assert argv[argv.index("--middleware") + 1] == "harness.guard.Guard"
    assert "--api-key" not in argv
    assert Policy.guard == "harness.guard.Guard"
    assert Continuum.guard == "kvbench_guard.Guard"
    assert (SHIM_DIR / "kvbench_guard.py").is_file()


# File modes.


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664),
                                       (0o000, 0o664)])  # fmt: skip
def test_records_writers_follow_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    assert records.current_umask() == mask
    stale = records.tmp_path(tmp_path / "m.json")
    stale.write_text("left by a killed run")
    stale.chmod(0o666)
    files = [
        records.write_json({"a": 1}, tmp_path / "m.json"),
        records.write_text("x", tmp_path / "DONE"),
        records.write_parquet(pa.table({"a": [1]}), tmp_path / "t.parquet"),
        records.write_table([{"a": 1}], pa.schema([("a", pa.int64())]), tmp_path / "u.parquet"),
    ]
    assert {f.name: mode(f) for f in files} == {f.name: want for f in files}
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_world_write_keeps_the_rest_of_the_umask(umask):
    umask(0o027)
    records.no_world_write()
    assert records.current_umask() == 0o027
    umask(0o020)
    records.no_world_write()
    assert records.current_umask() == 0o022


@pytest.mark.parametrize("mask,want", [(0o022, 0o755), (0o077, 0o700), (0o000, 0o755)])
def test_submission_files(tmp_path, umask, mask, want):
    umask(mask)
    script = tmp_path / "15_submission.sh"
    script.write_text("#!/bin/bash\n")
    script.chmod(0o777)
    kept = tmp_path / "16_submission.sh"
    kept.write_text("#!/bin/bash\n")
    kept.chmod(0o640)
    link = tmp_path / ".submission_file_0123abcd.sh"
    link.symlink_to(script)
    other = tmp_path / "15_submitted.pkl"
    other.write_bytes(b"")
    tighten_submission_files(tmp_path)
    assert not link.is_symlink() and not link.exists()
    assert mode(script) == want
    assert mode(kept) == 0o640 & want, "never looser than it was"
    assert other.exists()
    assert not [p for p in tmp_path.iterdir() if p.stat().st_mode & stat.S_IWOTH]
