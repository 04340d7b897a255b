"""Shared fixtures for the plugin tests: real vLLM servers on the CPU engine.

Each test module starts its own server (module scope, its own process group, killed at the
end); a start takes 45-80 s on 2 cores, so the modules keep their server count low.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # plugin_server, whatever the import mode


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "server: needs a real vLLM server on the CPU engine (started by the tests)")
