"""Scrape the server's Prometheus ``/metrics`` about once a second into long-format rows.

Parsing is ``prometheus_client.parser``'s. Histogram buckets and ``_created`` timestamps are
dropped (sums and counts are kept) to keep the records small. ``/metrics`` needs the server's
key (harness/guard.py): given, or else the one registered for the URL by the ``Server`` that
this process started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.guard import auth_headers

log = logging.getLogger(__name__)

KEEP_PREFIXES = ("vllm:", "kvbench:", "lmcache:")


@dataclass
class MetricRows:
    t_s: list[float] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self, t: float, text: str) -> int:
        n = 0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if not s.name.startswith(KEEP_PREFIXES) or s.name.endswith(("_bucket", "_created")):
                    continue
                self.t_s.append(t)
                self.name.append(s.name)
                self.labels.append(json.dumps(s.labels, sort_keys=True))
                self.value.append(float(s.value))
                n += 1
        return n


def parse(text: str) -> dict[tuple[str, str], float]:
    """One scrape as {(name, labels-json): value}; handy for tests and live checks."""
    rows = MetricRows()
    rows.add(0.0, text)
    return {(n, lab): v for n, lab, v in zip(rows.name, rows.labels, rows.value, strict=True)}


async def scrape_once(http: httpx.AsyncClient, url: str, api_key: str | None = None) -> str:
    r = await http.get(f"{url}/metrics", timeout=5, headers=auth_headers(url, api_key))
    r.raise_for_status()
    return r.text


async def scrape_loop(
    url: str,
    now: Callable[[], float],
    rows: MetricRows,
    stop: asyncio.Event,
    interval_s: float = 1.0,
    on_tick: Callable[[], None] | None = None,
    api_key: str | None = None,
) -> None:
    """Scrape until ``stop`` is set; one last scrape after it, so final counters are kept."""
    async with httpx.AsyncClient() as http:
        while True:
            stopping = stop.is_set()
            try:
                rows.add(now(), await scrape_once(http, url, api_key))
            except (httpx.HTTPError, ValueError) as e:
                log.debug("metrics scrape failed: %r", e)
            if on_tick is not None:
                on_tick()
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
