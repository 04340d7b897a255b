"""The policies: one module per policy, each registering a :class:`Policy` under its name.

A policy turns the cell's config into what the server needs (extra arguments, environment,
files such as an LMCache config) and validates what it can before submission. Its settings
are a typed dataclass (``Policy.settings_type``, see ``harness.policies.settings``). Modules
are found by :func:`harness.policies.base.discover`: adding a policy is adding a module.
"""

from __future__ import annotations

from harness.policies.base import Policy, classes, get, get_class, impl_name, names, of, register

__all__ = ["Policy", "classes", "get", "get_class", "impl_name", "names", "of", "register"]
