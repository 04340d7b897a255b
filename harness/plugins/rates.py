"""What ``predictive_scored`` measures on the running server: the prefill rate and the
host<->VRAM bandwidth (standard library only).

- **Prefill rate** (tokens/s): each engine step's scheduled tokens over the time until the
  next step is scheduled (``build_connector_meta`` marks both), for steps of at least
  ``MIN_STEP_TOKENS`` tokens (prefill-dominated: decode-only steps say little about
  recomputing a context); the median of the last ``WINDOW`` such steps, so the occasional
  step that was followed by idle time (no request left) does not drag it down. Recomputing a
  context runs as chunks of the same size, so this is the rate a dropped job's next turn sees.
- **Bandwidth** (GB/s): the worker times its host-tier copies (``HostTier``: CUDA events on
  the copy stream, wall time on the CPU engine; a timed calibration copy at start) and reports
  bytes and seconds as the counters ``host_copy_bytes`` / ``host_copy_seconds`` through vLLM's
  connector-stats path; the scheduler side adds them up here (bytes / seconds overall).
"""

from __future__ import annotations

import statistics
from collections import deque

MIN_STEP_TOKENS = 256
WINDOW = 64


class Rates:
    def __init__(self) -> None:
        self._step: tuple[float, int] | None = None  # (scheduled at, tokens) of the last step
        self._rates: deque[float] = deque(maxlen=WINDOW)
        self.copy_bytes = 0.0
        self.copy_seconds = 0.0

    def step(self, now: float, tokens: int) -> None:
        """A step was scheduled at ``now`` with ``tokens`` tokens."""
        if self._step is not None:
            t, n = self._step
            if n >= MIN_STEP_TOKENS and tokens > 0 and now > t:
                self._rates.append(n / (now - t))
        self._step = (now, tokens)

    def copied(self, nbytes: float, seconds: float) -> None:
        if nbytes > 0 and seconds > 0:
            self.copy_bytes += nbytes
            self.copy_seconds += seconds

    def prefill_tok_s(self) -> float | None:
        return statistics.median(self._rates) if self._rates else None

    def transfer_gb_s(self) -> float | None:
        return self.copy_bytes / self.copy_seconds / 1e9 if self.copy_seconds > 0 else None

    def state(self) -> dict[str, float | int | None]:
        pre, bw = self.prefill_tok_s(), self.transfer_gb_s()
        return {"prefill_tok_s": round(pre, 1) if pre else None, "prefill_steps": len(self._rates),
                "transfer_gb_s": round(bw, 4) if bw else None,
                "copied_bytes": int(self.copy_bytes)}  # fmt: skip
