"""harness.server.engine_death: a server that fails to start because its engine core was killed
says so. The log is the real one of the H200 campaign's failed cell (native_offload, dram=100:
the core died while pinning its 100 GiB host tier, no traceback, and the API server only said
"Engine core initialization failed. See root cause above"); the variants below are that log
edited, named as such."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness.errors import ServerStartError
from harness.server import Server, _log_tail, engine_death
from launch import plan

LOG = Path(__file__).resolve().parents[1] / "fixtures/server_logs/h200_native_offload_dram100.log"


def test_a_silent_engine_death_is_named_with_its_last_line():
    why = engine_death(LOG.read_text())
    assert why is not None
    assert "EngineCore (pid 2253) died without a traceback" in why
    assert "Allocating 32 CPU tensors..." in why
    assert "OOM killer" in why and "pinned host memory (dram)" in why
    # what the error lines alone show: nothing about the cause
    tail = _log_tail(LOG.read_text())
    assert "Engine core initialization failed" in tail and "Allocating" not in tail


def test_the_signal_is_named_where_vllm_gives_the_exit_code():
    # edited: the exit code as the CPU engine's vLLM reports a SIGKILLed core
    text = LOG.read_text().replace("Failed core proc(s): {}",
                                   "Failed core proc(s): {'EngineCore': -9}")
    why = engine_death(text)
    assert why is not None and "died without a traceback, ended by SIGKILL;" in why


def test_an_engine_that_wrote_its_traceback_speaks_for_itself():
    # edited: the core's own error inserted after its last line
    lines = LOG.read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if "Allocating 32 CPU tensors" in x) + 1
    lines[at:at] = ["(EngineCore pid=2253) Traceback (most recent call last):",
                    "(EngineCore pid=2253) torch.OutOfMemoryError: CUDA out of memory."]
    assert engine_death("\n".join(lines)) is None


def test_a_log_without_an_engine_death_says_nothing():
    # edited: the log as it stood while the engine was still starting
    lines = LOG.read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if "Allocating 32 CPU tensors" in x) + 1
    assert engine_death("\n".join(lines[:at])) is None
    assert engine_death("") is None


@pytest.mark.server
def test_a_real_server_whose_engine_core_is_killed_while_starting(tmp_path):
    """The CPU engine, its engine core SIGKILLed as soon as it exists (as the kernel's OOM
    killer would): the start fails with the cause named, and nothing is left running."""
    p = plan.make([f"results_dir={tmp_path}", "policy=[fcfs]", "jps=[1]"], today="20260101")
    srv = Server(p.configs[p.cells[0]], tmp_path / "server.log")
    killed: list[str] = []

    def kill_the_core() -> None:
        """Once the core has logged a line (so the message can quote its last one)."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            logged = srv.log_path.exists() and "(EngineCore" in srv.log_path.read_text(
                errors="replace")
            if srv.proc is not None and logged:
                with contextlib.suppress(psutil.Error):
                    for c in psutil.Process(srv.proc.pid).children(recursive=True):
                        if "EngineCore" in c.name() or "EngineCore" in " ".join(c.cmdline()):
                            c.kill()
                            killed.append(c.name())
                            return
            time.sleep(0.2)

    t = threading.Thread(target=kill_the_core, daemon=True)
    t.start()
    with pytest.raises(ServerStartError) as e, srv:
        pass
    t.join(5)
    assert killed, "the engine core never appeared"
    msg = str(e.value)
    print(msg[:600])
    assert re.search(r"EngineCore \(pid \d+\) died without a traceback(, ended by SIGKILL)?; "
                     r"its last line: ", msg), msg[:2000]
    # vLLM gives the core's exit code when it saw it end ({} when it did not): named then
    if "'EngineCore': -9" in msg:
        assert ", ended by SIGKILL" in msg
    assert "OOM killer" in msg
    left = [q for q in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(q.info["cmdline"] or [])]  # fmt: skip
    assert left == [], left
