"""A recorded agent session as sizes and times, what every trace reader makes, and the jobs
a replay sends for it.

A session is what one agent did for one task: its requests in order. A reader keeps, per
request, the tokens appended since the previous request's output (the first request: its
whole prompt), the output tokens, and the gap before the next request (tool plus think time,
from the previous output's last token to the next request) with the name of what ran in it.
No text and no token id is kept: a replay draws its own ids (``jobs``), so only a job's own
prefix can hit the cache, whatever the recorded sessions shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from workloads.job import JobSpec

USER = "user"  # the name of a gap that waited for a person's input, not a tool


@dataclass(frozen=True)
class Session:
    key: str  # the trace's session id (``#2``... when the trace rewrote its history)
    start_s: float | None  # when its first request was sent (epoch s); None: not recorded
    first_tokens: int  # the first request's prompt
    appended: tuple[int, ...]  # tokens appended after request k's output (k = 1..n-1)
    outputs: tuple[int, ...]  # output tokens of request k (k = 1..n)
    gaps: tuple[float, ...]  # seconds from request k's last token to request k+1
    tools: tuple[str, ...]  # what ran in gap k: a tool, USER, or "" (not recorded)

    @property
    def n_turns(self) -> int:
        return len(self.outputs)

    def prompt_tokens(self, turn: int) -> int:
        return self.first_tokens + sum(self.appended[: turn - 1]) + sum(self.outputs[: turn - 1])

    def fit(self, max_len: int) -> Session | None:
        """The session cut before its first request whose prompt and output exceed
        ``max_len`` tokens (the model's context); None when not even the first fits."""
        prompt, n = self.first_tokens, 0
        while n < self.n_turns and prompt + self.outputs[n] <= max_len:
            if n < len(self.appended):
                prompt += self.outputs[n] + self.appended[n]
            n += 1
        if n == 0:
            return None
        gaps = n - 1
        return replace(self, appended=self.appended[:gaps], outputs=self.outputs[:n],
                       gaps=self.gaps[:gaps], tools=self.tools[:gaps])  # fmt: skip


@dataclass
class Builder:
    """Collects one session's requests as a reader walks them."""

    key: str
    start_s: float | None
    first_tokens: int
    outputs: list[int]
    appended: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)

    def add(self, appended: int, gap: float, tool: str, output: int) -> None:
        """The next request: what was appended, the gap before it, what ran, its output."""
        self.appended.append(max(0, int(appended)))
        self.gaps.append(max(0.0, float(gap)))
        self.tools.append(tool)
        self.outputs.append(max(1, int(output)))

    def build(self) -> Session:
        return Session(self.key, self.start_s, max(1, int(self.first_tokens)),
                       tuple(self.appended), tuple(max(1, int(o)) for o in self.outputs),
                       tuple(self.gaps), tuple(self.tools))  # fmt: skip


def jobs(
    sessions: list[Session], rng: np.random.Generator, vocab: tuple[int, int]
) -> list[JobSpec]:
    """One job per session, in order: the session's sizes, gaps and tool names, with token ids
    drawn from ``rng`` (the seed's token stream); arrival at the recorded start (or 0). Its
    per-turn outputs are ``completions``; ``completion_tokens`` is their median, what a
    client that asks the same of every turn sends."""
    lo, hi = vocab
    out = []
    for i, s in enumerate(sessions):
        first = tuple(rng.integers(lo, hi, s.first_tokens).tolist())
        appended = tuple(tuple(rng.integers(lo, hi, k).tolist()) for k in s.appended)
        out.append(JobSpec(job_id=i, arrival_s=s.start_s or 0.0, first_prompt=first,
                           tool_outputs=appended, tool_s=s.gaps,
                           completion_tokens=int(np.median(s.outputs)),
                           completions=s.outputs, tool_names=s.tools))  # fmt: skip
    return out
