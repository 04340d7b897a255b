"""``continuum``: the public Continuum fork (github Hanchenli/vllm-continuum, vLLM 0.10.2).

The server is the fork's own ``vllm.entrypoints.openai.api_server``, started by the fork
environment's interpreter (``policy.settings.python``, by default ``$KVBENCH_CONTINUUM_PYTHON``)
with the shared base arguments (all of them exist in 0.10.2) plus
``--scheduling-policy continuum`` (``vllm/engine/arg_utils.py`` of the fork). The client sends
Continuum's top-level ``job_id`` / ``is_last_step`` on every turn (``continuum_fields``).

Environment: ``PYTHONPATH`` is exactly ``harness/policies/continuum_site`` (kvbench's own
packages stay out of the fork's interpreter), whose ``sitecustomize`` gives each finished turn
a tool name when its output has none (random weights never write one), so the fork's own
pinning rule can act; ``KVBENCH_CONTINUUM_TOOL`` is that name. The shim loads only
``harness/hints.py`` (the hint format, standard library only) by its file path, and
``continuum_site/kvbench_guard.py`` loads ``harness/guard.py`` (the server's key check, the
``--middleware`` every kvbench server gets) the same way. Settings: ``ContinuumSettings``
below. See docs/policies/continuum.md.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.policies.base import Policy, register
from harness.policies.settings import Settings, setting, show

SHIM_DIR = Path(__file__).resolve().with_name("continuum_site")
HINTS_FILE = SHIM_DIR.parents[1] / "hints.py"  # the shim loads the hint format by its path
GUARD_FILE = SHIM_DIR.parents[1] / "guard.py"  # and kvbench_guard the server guard
HOW = (
    "build it as docs/policies/continuum.md says, "
    "then export KVBENCH_CONTINUUM_PYTHON=<env>/bin/python; or run kvbench's portable "
    "Continuum instead: policy=continuum_ttl"
)
FORK_FILE = "v1/core/estimate_with_func.py"  # Continuum's estimator, beside its scheduler
# Run by the fork's interpreter: where its vllm lives, and whether it has Continuum's estimator.
PROBE = (
    "import importlib.util as u, os, sys\n"
    "s = u.find_spec('vllm')\n"
    "if s is None or not s.submodule_search_locations: sys.exit(3)\n"
    "d = list(s.submodule_search_locations)[0]\n"
    "print(d)\n"
    "sys.exit(0 if os.path.isfile(os.path.join(d, 'v1', 'core', 'estimate_with_func.py')) else 4)\n"
)


@dataclass(frozen=True)
class ContinuumSettings(Settings):
    python: str | None = setting(
        None, "the fork environment's interpreter (the YAML reads $KVBENCH_CONTINUUM_PYTHON)")
    default_tool: str | None = setting(
        "tool", "tool name of a finished turn whose output names none; null: no fallback")

    def check(self, policy: str) -> None:
        tool = self.default_tool
        if tool is not None and (not tool or tool.split() != [tool]):
            raise ConfigError(
                f"policy.settings.default_tool={show(tool)} must be one word (a tool name, as "
                f"the fork parses the first word of a bash command) or null for no fallback"
            )


@register
class Continuum(Policy):
    name = "continuum"
    engine_reason = "the fork is a CUDA build of vLLM 0.10.2"
    settings_type = ContinuumSettings
    # The fork brings its own scheduler (--scheduling-policy continuum: program order and
    # pinned jobs first); sched=fcfs means "the engine's default", which for the fork is that.
    schedulers = ("fcfs",)
    sched_reason = ("the fork schedules with its own --scheduling-policy continuum, which is "
                    "program-level already; request priorities would need priority scheduling")
    # kvbench's packages are not on the fork's path: the guard (harness/guard.py, standard
    # library only) is loaded there by its file path (continuum_site/kvbench_guard.py). The
    # fork (vLLM 0.10.2) has --middleware and adds it last, outermost, as mainline does.
    guard = "kvbench_guard.Guard"

    def python(self, cfg) -> str | None:
        return self.settings(cfg).python or None

    def server_args(self, cfg) -> list[str]:
        return ["--scheduling-policy", "continuum"] + super().server_args(cfg)

    def implementation(self, cfg) -> str:
        py = self.python(cfg) or "KVBENCH_CONTINUUM_PYTHON (unset)"
        return ("the Continuum fork (Hanchenli/vllm-continuum, vLLM 0.10.2, "
                f"--scheduling-policy continuum) from {py}")

    def server_env(self, cfg) -> dict[str, str]:
        env = {"PYTHONPATH": str(SHIM_DIR)}
        tool = self.settings(cfg).default_tool
        if tool:
            env["KVBENCH_CONTINUUM_TOOL"] = tool
        return {**env, **super().server_env(cfg)}

    def validate(self, cfg) -> None:
        super().validate(cfg)
        owned = sorted({"PYTHONPATH", "KVBENCH_CONTINUUM_TOOL"} & set(cfg.policy.env))
        if owned:
            raise ConfigError(
                f"policy.env.{owned[0]} is set by policy=continuum (the fork's shim); remove it "
                f"(the tool name is policy.settings.default_tool)"
            )
        for need in (SHIM_DIR / "sitecustomize.py", SHIM_DIR / "kvbench_guard.py", HINTS_FILE,
                     GUARD_FILE):
            if not need.is_file():
                raise ConfigError(
                    f"policy=continuum needs its shim's {need}, which this install lacks; run "
                    f"kvbench from its repository (pip install -e .)"
                )
        check_fork_env(self.settings(cfg).python)


def check_fork_env(python: str | None) -> None:
    """One-line ConfigError unless ``python`` is an interpreter whose vllm is the fork."""
    if not python:
        raise ConfigError(
            "policy.settings.python is unset: policy=continuum runs the Continuum fork "
            f"(github Hanchenli/vllm-continuum, vLLM 0.10.2) from its own Python environment; {HOW}"
        )
    problem = fork_problem(str(python))
    if problem:
        raise ConfigError(f"policy.settings.python={python} {problem}; {HOW}")


@functools.lru_cache(maxsize=8)
def fork_problem(python: str) -> str | None:
    """Why ``python`` is not the fork's interpreter (None: it is). Cached per planning run."""
    p = Path(python)
    if not p.exists():
        return "does not exist"
    if p.is_dir() or not os.access(p, os.X_OK):
        return "is not an executable file"
    try:
        r = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not be run ({type(e).__name__})"
    if r.returncode == 3:
        return "has no vllm installed"
    if r.returncode == 4:
        where = r.stdout.strip()
        return f"runs a vllm ({where}) that is not the Continuum fork (no {FORK_FILE})"
    if r.returncode != 0:
        return f"failed to start (exit {r.returncode}: {r.stderr.strip()[-200:]!r})"
    return None
