"""harness.server.engine_death: a server that fails to start because its engine core was killed
says so. The log is the real one of the H200 campaign's failed cell (native_offload, dram=100:
the core died while pinning its 100 GiB host tier, no traceback, and the API server only said
"Engine core initialization failed. See root cause above"); the variants below are that log
edited, named as such."""

from __future__ import annotations

from pathlib import Path

from harness.server import _log_tail, engine_death

LOG = Path(__file__).resolve().parents[1] / "fixtures/server_logs/h200_native_offload_dram100.log"


def test_a_silent_engine_death_is_named_with_its_last_line():
    why = engine_death(LOG.read_text())
    assert why is not None
    assert "EngineCore (pid 2253) died without a traceback" in why
    assert "Allocating 32 CPU tensors..." in why
    assert "OOM killer" in why and "pinned host memory (dram)" in why
    # what the error lines alone show: nothing about the cause
    tail = _log_tail(LOG)
    assert "Engine core initialization failed" in tail and "Allocating" not in tail


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
