"""Tool-time distributions, one class per kind, chosen by ``workload.tool.dist``.

``fixed``, ``exponential``, ``lognormal`` and ``file`` draw unnamed times. ``empirical`` and
``fitted`` learn per-tool times from a recorded trace (``workload.tool.trace``, format
``workload.tool.trace_format`` or detected; ``workloads.traces``): each gap draws a tool by
the tools' call frequencies in the trace, then a time for that tool, and the job carries the
tool's name (the client sends it in the request's hint).

Register another kind in ``KINDS`` (and add it to ``launch.schema.ToolDist``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workloads import traces
from workloads.errors import WorkloadError
from workloads.paths import resolve


class ToolTime(Protocol):
    def draw(self, rng: np.random.Generator, n: int) -> list[float]: ...

    def draw_tools(self, rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
        """``n`` tool times and the tools' names ("" for a kind without names)."""
        ...

    def describe(self) -> dict:
        """What the workload summary records of this distribution ({} : nothing)."""
        ...


class Unnamed:
    """A kind whose times name no tool."""

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        raise NotImplementedError

    def draw_tools(self, rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
        return self.draw(rng, n), [""] * n

    def describe(self) -> dict:
        return {}


def _mean(conf: Any, positive: bool) -> float:
    m = float(conf.mean_s)
    if not math.isfinite(m) or m < 0 or (positive and m == 0):
        need = "a positive" if positive else "a non-negative"
        raise WorkloadError(f"workload.tool.mean_s={conf.mean_s}: must be {need} number of seconds")
    return m


class Fixed(Unnamed):
    def __init__(self, conf: Any) -> None:
        self.value = _mean(conf, positive=False)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return [self.value] * n


class Exponential(Unnamed):
    def __init__(self, conf: Any) -> None:
        self.mean = _mean(conf, positive=True)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return rng.exponential(self.mean, n).tolist()


class LogNormal(Unnamed):
    """Log-normal with the given mean (not median) and shape ``sigma``."""

    def __init__(self, conf: Any) -> None:
        self.sigma = float(conf.sigma)
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise WorkloadError(f"workload.tool.sigma={conf.sigma}: must be a non-negative shape")
        self.mu = float(np.log(_mean(conf, positive=True)) - self.sigma**2 / 2)

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return rng.lognormal(self.mu, self.sigma, n).tolist()


class FromFile(Unnamed):
    """Per-turn values from a file (one number per line), cycled across jobs. A relative path
    is from the repository root (as ``model.path``)."""

    def __init__(self, conf: Any) -> None:
        if not conf.file:
            raise WorkloadError(
                "workload.tool.file=null: must name a file (one number per line) when "
                "workload.tool.dist=file"
            )
        path = resolve(conf.file)
        try:
            text = Path(path).read_text().split()
        except OSError as e:
            raise WorkloadError(
                f"workload.tool.file={conf.file}: cannot read it ({e.strerror}: {path})"
            ) from None
        try:
            self.values = [float(x) for x in text]
        except ValueError as e:
            raise WorkloadError(f"workload.tool.file={conf.file}: {e}") from None
        if not self.values:
            raise WorkloadError(f"workload.tool.file={conf.file}: holds no numbers")
        if not all(math.isfinite(v) and v >= 0 for v in self.values):
            raise WorkloadError(
                f"workload.tool.file={conf.file}: holds a negative or non-finite time"
            )
        self.pos = 0

    def draw(self, rng: np.random.Generator | None, n: int) -> list[float]:
        out = [self.values[(self.pos + i) % len(self.values)] for i in range(n)]
        self.pos += n
        return out


class Empirical:
    """Per tool, the recorded times of a trace: a gap draws a tool by call frequency, then one
    of that tool's recorded times (uniformly)."""

    def __init__(self, conf: Any) -> None:
        self.trace = str(getattr(conf, "trace", None))
        samples = _samples(conf, str(conf.dist))
        self.names = list(samples)
        self.samples = [np.asarray(samples[t], dtype=np.float64) for t in self.names]
        counts = np.array([len(x) for x in self.samples], dtype=np.float64)
        self.freq = counts / counts.sum()

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return self.draw_tools(rng, n)[0]

    def draw_tools(self, rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
        tools = rng.choice(len(self.names), size=n, p=self.freq)
        u = rng.random(n)
        picks = zip(tools, u, strict=True)
        secs = [float(self.samples[t][int(x * len(self.samples[t]))]) for t, x in picks]
        return secs, [self.names[t] for t in tools]

    def describe(self) -> dict:
        share = {t: round(float(f), 4) for t, f in zip(self.names, self.freq, strict=True)}
        return {"tool_trace": self.trace, "tool_share": share}


class Fitted(Empirical):
    """Per tool, a log-normal fitted to the trace's times by maximum likelihood: mu the mean
    of the log times, sigma their population standard deviation (times below ``FLOOR_S``
    count as ``FLOOR_S``). A tool recorded fewer than ``MIN_SAMPLES`` times keeps its own mu
    and takes sigma pooled over the tools (the spread of every log time about its own tool's
    mean, over tools recorded at least twice). Tools are drawn by call frequency, as
    ``empirical``."""

    FLOOR_S = 1e-3
    MIN_SAMPLES = 8

    def __init__(self, conf: Any) -> None:
        super().__init__(conf)
        logs = [np.log(np.maximum(x, self.FLOOR_S)) for x in self.samples]
        pooled = pooled_sigma(logs)
        self.params = [(float(g.mean()), float(g.std()) if len(g) >= self.MIN_SAMPLES else pooled)
                       for g in logs]  # fmt: skip
        self.pooled = [t for t, x in zip(self.names, self.samples, strict=True)
                       if len(x) < self.MIN_SAMPLES]  # fmt: skip

    def draw_tools(self, rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
        tools = rng.choice(len(self.names), size=n, p=self.freq)
        z = rng.standard_normal(n)
        picks = zip(tools, z, strict=True)
        secs = [float(np.exp(self.params[t][0] + self.params[t][1] * x)) for t, x in picks]
        return secs, [self.names[t] for t in tools]

    def describe(self) -> dict:
        fits = {t: [round(mu, 4), round(sd, 4)]
                for t, (mu, sd) in zip(self.names, self.params, strict=True)}  # fmt: skip
        return {**super().describe(), "tool_lognormal_mu_sigma": fits,
                "tool_sigma_pooled": self.pooled}  # fmt: skip


def pooled_sigma(logs: list[np.ndarray]) -> float:
    """The maximum-likelihood spread of log times about their own tool's mean, over the tools
    recorded at least twice (none: the spread of all of them)."""
    groups = [g for g in logs if len(g) >= 2]
    if not groups:
        return float(np.concatenate(logs).std())
    resid = np.concatenate([g - g.mean() for g in groups])
    return float(np.sqrt(np.mean(resid**2)))


def _samples(conf: Any, dist: str) -> dict[str, list[float]]:
    trace = getattr(conf, "trace", None)
    key = f"workload.tool.trace={trace}"
    if not trace:
        raise WorkloadError(
            f"workload.tool.trace=null: must name a trace file when workload.tool.dist={dist} "
            f"(formats: {', '.join(traces.FORMATS)})"
        )
    fmt = getattr(conf, "trace_format", None)
    _, found = traces.sessions(key, "workload.tool.trace_format", trace, fmt)
    samples = traces.tool_samples(found)
    if not samples:
        raise WorkloadError(f"{key}: records no gap after a named tool call")
    return samples


KINDS: dict[str, type] = {
    "fixed": Fixed,
    "exponential": Exponential,
    "lognormal": LogNormal,
    "file": FromFile,
    "empirical": Empirical,
    "fitted": Fitted,
}


class Capped:
    """Another kind's times, each at most ``max_s`` (``workload.tool.max_s``); names kept."""

    def __init__(self, inner: ToolTime, max_s: float) -> None:
        self.inner, self.max_s = inner, max_s

    def draw(self, rng: np.random.Generator, n: int) -> list[float]:
        return self.draw_tools(rng, n)[0]

    def draw_tools(self, rng: np.random.Generator, n: int) -> tuple[list[float], list[str]]:
        secs, names = self.inner.draw_tools(rng, n)
        return [min(s, self.max_s) for s in secs], names

    def describe(self) -> dict:
        return {**self.inner.describe(), "max_s": self.max_s}


def make(conf: Any) -> ToolTime:
    """The tool-time distribution of ``conf`` (a ToolTimeConf or its DictConfig), capped at
    ``conf.max_s`` when that is set."""
    try:
        kind = KINDS[str(conf.dist)]
    except KeyError:
        raise WorkloadError(
            f"workload.tool.dist={conf.dist} is unknown; allowed: {', '.join(KINDS)}"
        ) from None
    out: ToolTime = kind(conf)
    max_s = getattr(conf, "max_s", None)  # absent from a config older than the key: none
    if max_s is not None:
        m = float(max_s)
        if not (math.isfinite(m) and m > 0):
            raise WorkloadError(f"workload.tool.max_s={max_s}: must be a positive number of "
                                f"seconds, or null")
        out = Capped(out, m)
    return out
