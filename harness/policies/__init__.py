"""Policy registry: one module per policy, each registering a :class:`Policy`.

A policy turns the cell's config into what the server needs (extra arguments, environment,
files such as an LMCache config) and validates what it can before submission.
"""

from __future__ import annotations

from harness.policies.base import Policy, get, names, register

# Import the modules so their @register decorators run.
from harness.policies import fcfs  # noqa: E402,F401  isort: skip
from harness.policies import continuum_ttl, predictive_prefetch  # noqa: E402,F401  isort: skip
from harness.policies import continuum, lmcache, native_offload  # noqa: E402,F401  isort: skip

__all__ = ["Policy", "get", "names", "register"]
