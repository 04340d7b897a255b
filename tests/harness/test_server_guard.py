"""The guard on a real server, started as the harness starts a shared one
(``harness.server.Server`` with ``dev_mode=True``: VLLM_SERVER_DEV_MODE=1, so that
``/reset_prefix_cache`` exists): every endpoint but ``/health`` needs the per-server key, the
callers in ``harness/`` send it, and the key is in neither the server's argv nor its log. One
server for the module (CPU engine, tiny model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psutil
import pytest

from harness import guard
from harness.cell import reset_between_cells
from harness.metrics import parse, scrape_once
from harness.server import Server
from launch import plan

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guarded")
    p = plan.make([f"results_dir={tmp}", "policy=[fcfs]", "jps=[1]"], today="20260101")
    cfg = p.configs[p.cells[0]]
    with Server(cfg, tmp / "_server" / "server.log", dev_mode=True) as srv:
        yield srv


def get(srv: Server, path: str, key: str | None = None, method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{srv.url}{path}", headers=headers, timeout=30)


def test_reset_prefix_cache_needs_the_key(server):
    assert server.command.env["VLLM_SERVER_DEV_MODE"] == "1"
    assert get(server, "/reset_prefix_cache", method="POST").status_code == 401
    assert get(server, "/reset_prefix_cache", "wrong-key", method="POST").status_code == 401
    assert get(server, "/reset_prefix_cache", server.api_key, method="POST").status_code == 200


@pytest.mark.parametrize("path", ["/server_info", "/metrics", "/v1/models", "/is_sleeping",
                                  "/version", "/load", "/openapi.json", "/docs"])
def test_other_endpoints_need_the_key(server, path):
    assert get(server, path).status_code == 401
    assert get(server, path, "wrong-key").status_code == 401


@pytest.mark.parametrize("path", ["/server_info", "/metrics", "/v1/models", "/is_sleeping"])
def test_with_the_key_they_answer(server, path):
    assert get(server, path, server.api_key).status_code == 200


@pytest.mark.parametrize("path", ["/collective_rpc", "/sleep", "/pause", "/abort_requests",
                                  "/start_profile", "/reset_mm_cache"])
def test_state_changing_endpoints_refuse_without_the_key(server, path):
    assert get(server, path, method="POST").status_code == 401


def test_health_is_open(server):
    assert get(server, "/health").status_code == 200


def test_the_harness_callers_send_the_key(server):
    """``metrics.scrape_once`` and ``cell.reset_between_cells`` as harness/cell.py calls them
    (the URL only): the key comes from the Server that this process started."""

    async def scrape() -> str:
        async with httpx.AsyncClient() as http:
            return await scrape_once(http, server.url)

    m = parse(asyncio.run(scrape()))
    assert any(n == "vllm:num_requests_running" for n, _ in m)
    reset = asyncio.run(reset_between_cells(server, timeout_s=60))
    assert reset["ok"] and reset["http"] == [200, 200]


def test_the_key_is_in_no_argv_and_no_log(server):
    assert server.proc is not None
    procs = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(True)]
    for p in procs:
        try:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        assert server.api_key.encode() not in cmdline
    main = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--middleware" in main and b"harness.guard.Guard" in main
    assert b"--api-key" not in main
    get(server, "/metrics", server.api_key)  # requests that carried the key, then the log
    text = server.log_path.read_text(errors="replace")
    assert "vllm.entrypoints.openai.api_server" in text or "Application startup" in text
    assert server.api_key not in text
    assert guard.KEY_ENV not in text
