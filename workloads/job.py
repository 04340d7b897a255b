"""A job and a cell's jobs as data: what the client sends, turn by turn.

A job has ``n_turns`` turns. Turn 1 sends ``first_prompt``; after turn k the tool runs for
``tool_s[k]`` seconds and returns ``tool_outputs[k]``, which is appended after the model's own
output to form the prompt of turn k+1. Turn k asks for ``output_tokens(k)`` tokens: the same
``completion_tokens`` every turn (the seed's job), or per turn (``completions``, a trace's).
The gap after turn k may name its tool (``tool_names``: a trace's, or a tool-time kind that
draws named tools); the client sends it in the request's hint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class JobSpec:
    job_id: int
    arrival_s: float
    first_prompt: tuple[int, ...]  # turn-1 prompt ids
    tool_outputs: tuple[tuple[int, ...], ...]  # ids appended after turn k (k = 1..n-1)
    tool_s: tuple[float, ...]  # tool time after turn k (k = 1..n-1)
    completion_tokens: int  # output tokens of every turn, unless `completions` is given
    completions: tuple[int, ...] = ()  # output tokens of turn k (k = 1..n); () : the above
    tool_names: tuple[str, ...] = ()  # the tool of the gap after turn k; () : unnamed

    @property
    def n_turns(self) -> int:
        return len(self.tool_outputs) + 1

    def output_tokens(self, turn: int) -> int:
        """Tokens turn ``turn`` (1-based) asks for."""
        return self.completions[turn - 1] if self.completions else self.completion_tokens

    def prompt_tokens(self, turn: int) -> int:
        """Prompt length of ``turn`` (1-based), with every earlier turn complete."""
        appended = sum(len(t) for t in self.tool_outputs[: turn - 1])
        if self.completions:
            outputs = sum(self.completions[: turn - 1])
        else:
            outputs = (turn - 1) * self.completion_tokens
        return len(self.first_prompt) + appended + outputs

    def tool_after(self, turn: int) -> float:
        return self.tool_s[turn - 1] if turn < self.n_turns else 0.0

    def tool_name(self, turn: int) -> str:
        """The tool that runs after ``turn`` ("" when unnamed, and after the last turn)."""
        return self.tool_names[turn - 1] if turn < self.n_turns and self.tool_names else ""


@dataclass
class Workload:
    jobs: list[JobSpec]
    jps: float
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def n_jobs(self) -> int:
        return len(self.jobs)

    def digest(self) -> str:
        """A short hash of every token id, size, time and tool name: equal digests mean equal
        workloads. Per-turn outputs and tool names enter only where a job has them, so the
        seed's jobs hash as they always did."""
        h = hashlib.sha256()
        for j in self.jobs:
            h.update(np.asarray(j.first_prompt, dtype=np.int32).tobytes())
            for t in j.tool_outputs:
                h.update(np.asarray(t, dtype=np.int32).tobytes())
            h.update(np.asarray([j.arrival_s, *j.tool_s], dtype=np.float64).tobytes())
            if j.completions:
                h.update(b"out" + np.asarray(j.completions, dtype=np.int64).tobytes())
            if j.tool_names:
                h.update(b"tools" + "\x1f".join(j.tool_names).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "n_jobs": self.n_jobs,
            "jps": self.jps,
            "seed": self.seed,
            "n_turns": max((j.n_turns for j in self.jobs), default=0),
            "arrival_window_s": self.jobs[-1].arrival_s if self.jobs else 0.0,
            "prompt_tokens_total": sum(
                j.prompt_tokens(t) for j in self.jobs for t in range(1, j.n_turns + 1)
            ),
            "digest": self.digest(),
            **self.meta,
        }
