"""How a cell turns SIGTERM/SIGINT into a stop (no server: harness.cell's signal handling)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness import cell


def _signal_self(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs at the next bytecode of the main thread


def test_the_first_signal_raises_and_stays_raised_where_it_was_swallowed():
    """A request's error handler (``except Exception``) can swallow the exception the signal
    raised; the stop is remembered, so the cell raises again at its next safe point."""
    before = signal.getsignal(signal.SIGTERM)
    with cell._signals_raise():
        try:
            _signal_self()
        except Exception as e:  # noqa: BLE001 - as the client's turn does
            swallowed = e
        assert "received SIGTERM" in str(swallowed)
        assert cell._stop_requested() == "SIGTERM"
        with pytest.raises(cell._Interrupted, match="received SIGTERM"):
            cell._raise_if_stopped()
        _signal_self(signal.SIGINT)  # while stopping: logged, not raised (the unwind goes on)
    assert cell._stop_requested() is None
    assert signal.getsignal(signal.SIGTERM) is before
    cell._raise_if_stopped()  # nothing pending outside a cell
