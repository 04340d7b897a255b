"""The Policy seam and the one registry of policies.

Every module of the ``harness.policies`` package (not the private ``_*`` ones, not
subpackages or data folders such as ``continuum_site``) is imported on the first lookup, and
each ``@register``-ed class is found under its ``name``; there is no hand-kept list. A name
registered by two classes is an error. A policy class carries everything else that keys on
its name: its settings type (``settings_type``) and, for our own plugins, the connector and
its module (``harness.policies.plugin_policy.PluginPolicy``), from which
``harness.plugins`` derives its lookups.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any, ClassVar

from harness.errors import ConfigError, KvbenchError
from harness.policies.settings import Settings, parse

_REGISTRY: dict[str, type[Policy]] = {}
_discovered = False


class RegistryError(KvbenchError, ValueError):
    """Two policy classes claim one name (or a class has none)."""


class Policy:
    """Defaults are plain vLLM: no extra flags, no extra environment, no settings."""

    name: ClassVar[str] = ""
    engine_reason: ClassVar[str] = ""  # why it runs only on cfg.policy.engines (engine error)
    settings_type: ClassVar[type[Settings]] = Settings  # the policy's typed settings
    # Scheduling orders (the cell axis ``sched``) the policy can run under, and the one a
    # sweep uses when neither the command nor the experiment names one.
    schedulers: ClassVar[tuple[str, ...]] = ("fcfs", "program")
    default_sched: ClassVar[str] = "fcfs"
    sched_reason: ClassVar[str] = ""  # why a scheduling order is not offered (planning error)
    # The server's key check (harness/guard.py) as vLLM's --middleware import path, importable
    # by the server's interpreter (the repo is on its PYTHONPATH; see continuum for one where
    # it is not).
    guard: ClassVar[str] = "harness.guard.Guard"

    @classmethod
    def parse_settings(cls, raw: Mapping[str, Any] | None) -> Any:
        """``settings_type`` built from a plain mapping; ConfigError names a bad key."""
        return parse(cls.settings_type, raw, cls.name)

    def settings(self, cfg) -> Any:
        """The cell's ``policy.settings`` as this policy's ``settings_type``."""
        return self.parse_settings(plain(cfg.policy.settings))

    def server_args(self, cfg) -> list[str]:
        return list(cfg.policy.extra_args)

    def server_env(self, cfg) -> dict[str, str]:
        return {str(k): str(v) for k, v in cfg.policy.env.items()}

    def files(self, cfg) -> dict[str, str]:
        """Files to write into the cell folder before the server starts (name -> text).

        Names are plain file names in the cell folder. The server runs with the cell folder as
        its working directory, so ``server_env`` may point at these files with the same
        relative names (the cell folder is not known when the command is built).
        """
        return {}

    def write_through_gib(self, cfg) -> float | None:
        """GiB of a host tier that copies what the engine computes whether VRAM keeps it or
        not (LMCache, vLLM's own offload): such a tier smaller than VRAM's KV cache holds a
        subset of VRAM under recency eviction, so it can serve almost nothing (the cell warns,
        ``harness/cell.py``). ``None`` for policies without one."""
        return None

    def log_counts(self, cfg, log: str) -> dict[str, float] | None:
        """What the policy counted in the cell, read from the cell's slice of the server log,
        for a policy whose engine exports no Prometheus counter for it; ``None`` when there is
        nothing to read. Kept as ``records.LOG_COUNTS``; ``bytes_offload`` and
        ``bytes_onload`` (VRAM -> host tier, host tier -> VRAM) are what the analysis reads."""
        return None

    def python(self, cfg) -> str | None:
        """Interpreter for the server if the policy needs its own environment."""
        return None

    def implementation(self, cfg) -> str:
        """One line saying what runs for this cell (the plan table shows it per policy, so a
        substitution can never pass unseen): the code and the engine it runs on."""
        return f"plain {self._engine(cfg)}"

    def _engine(self, cfg) -> str:
        py = self.python(cfg)
        where = f" from {py}" if py else ""
        return f"{cfg.engine.package} {cfg.engine.version}{where}"

    def validate(self, cfg) -> None:
        """Raise ConfigError for settings that cannot work (runs at planning time)."""
        if cfg.engine.name not in cfg.policy.engines:
            runs_on = ", ".join(cfg.policy.engines)
            why = f" ({self.engine_reason})" if self.engine_reason else ""
            raise ConfigError(
                f"policy={cfg.policy.name} runs on engine {runs_on}, "
                f"not engine={cfg.engine.name}{why}; "
                f"choose engine={cfg.policy.engines[0]} (on a GPU node) or a policy the "
                f"{cfg.engine.name} engine runs"
            )
        if cfg.sched not in self.schedulers:
            why = f" ({self.sched_reason})" if self.sched_reason else ""
            raise ConfigError(
                f"policy={cfg.policy.name} cannot run with sched={cfg.sched}{why}; allowed: "
                f"{', '.join(self.schedulers)}; set sched={self.schedulers[0]} for it or leave "
                f"policy={cfg.policy.name} out of this sweep"
            )
        self.settings(cfg)


def plain(raw: Any) -> dict[str, Any]:
    """``policy.settings`` (an OmegaConf node or a mapping) as a plain dict, resolved."""
    if raw is None:
        return {}
    from omegaconf import DictConfig, OmegaConf  # not needed by the plugins in vLLM

    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    return {str(k): v for k, v in dict(raw).items()}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: ``cls`` under ``cls.name``; a name taken by another class raises."""
    if not cls.name:
        raise RegistryError(f"{cls.__module__}.{cls.__qualname__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and _where(other) != _where(cls):  # the same class re-imported: fine
        raise RegistryError(
            f"policy name {cls.name!r} is registered twice: by {_where(other)} and {_where(cls)}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def discover() -> None:
    """Import every public module of ``harness.policies`` once (their ``@register`` runs)."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("harness.policies")
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.ispkg and not mod.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{mod.name}")
    _discovered = True


def classes() -> dict[str, type[Policy]]:
    """name -> policy class, every policy of the package."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def names() -> list[str]:
    return list(classes())


def get_class(name: str) -> type[Policy]:
    try:
        return classes()[name]
    except KeyError:
        raise ConfigError(
            f"policy={name} has no implementation; known: {', '.join(names())}"
        ) from None


def get(name: str) -> Policy:
    return get_class(name)()


def impl_name(policy_conf: Any) -> str:
    """The implementation of a policy config (``impl``, else its ``name``)."""
    return str(policy_conf.get("impl") or policy_conf.get("name"))


def of(cfg: Any) -> Policy:
    """The implementation a cell's config runs (a variant's ``policy.impl``, else its name)."""
    return get(impl_name(cfg.policy))
