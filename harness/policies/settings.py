"""Typed policy settings: one frozen dataclass per policy, the only place a default lives.

Each policy class names its type (``Policy.settings_type``); the launcher builds it from
``cfg.policy.settings`` at planning time and our plugin connectors build the same type from
``kv_connector_extra_config`` when vLLM loads them, so both sides accept and refuse the same
values with the same message. Nothing here imports vLLM (planning runs on a login node)::

    @dataclass(frozen=True)
    class MySettings(Settings):
        lead_s: float = setting(0.2, "prefetch lead (s)")
        mode: str = setting("a", "how it is done", choices=("a", "b"))

Field types may be ``bool``, ``int``, ``float`` (an int is taken as a float), ``str``,
``dict[str, Any]`` and ``X | None``. An unknown key, a value of another type or a value
outside ``choices`` raises :class:`~harness.errors.ConfigError` naming
``policy.settings.<key>`` and what is allowed. ``Settings.check`` adds a type's own rules.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from harness.errors import ConfigError

S = TypeVar("S", bound="Settings")
Choices = Iterable[Any] | Callable[[], Iterable[Any]]
KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
        dict: "a mapping (key: value)"}  # fmt: skip


def setting(default: Any, doc: str, *, choices: Choices = ()) -> Any:
    """A settings field: its default, a one-line doc and, optionally, the allowed values
    (or a function giving them, for a registry that may grow after import)."""
    meta = {"doc": doc, "choices": choices}
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every policy's settings type; a policy without settings uses it as it is."""

    def check(self, policy: str) -> None:
        """Rules beyond type and choices (raise ConfigError naming the key)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """name, type, default, doc and choices of every field (for docs and tests)."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default
            out.append({"name": f.name, "type": hints[f.name], "default": default,
                        "doc": f.metadata.get("doc", ""), "choices": choices_of(f)})  # fmt: skip
        return out


def choices_of(f: dataclasses.Field) -> tuple[Any, ...]:
    c = f.metadata.get("choices", ())
    return tuple(c() if callable(c) else c)


def show(value: Any) -> str:
    """A value as it is written in an override (``null``, ``true``, ``''``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and (not value or value.split() != [value]):
        return repr(value)
    return str(value)


def parse(cls: type[S], raw: Mapping[str, Any] | None, policy: str) -> S:
    """``cls`` built from ``raw`` over its defaults; every value checked."""
    given = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields), key=str)
    if unknown:
        known = ", ".join(sorted(fields)) or "none (this policy takes no settings)"
        raise ConfigError(
            f"policy.settings.{unknown[0]} is unknown for policy={policy}; known: {known}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in given:
            continue
        value = coerce(policy, name, given[name], hints[name])
        allowed = choices_of(f)
        if allowed and value is not None and value not in allowed:
            raise ConfigError(
                f"policy.settings.{name}={show(value)} is not allowed for policy={policy}; "
                f"allowed: {', '.join(map(str, allowed))}"
            )
        values[name] = value
    out = cls(**values)
    out.check(policy)
    return out


def coerce(policy: str, key: str, value: Any, tp: Any) -> Any:
    """``value`` as the field type ``tp``, or ConfigError naming the key and the type."""
    nullable = False
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"settings field {key}: unsupported type {tp}")
        tp = args[0]
    base = typing.get_origin(tp) or tp
    if value is None and nullable:
        return None
    if base is dict and isinstance(value, Mapping):
        return dict(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and (base is bool or not isinstance(value, bool)):
        return value
    what = KIND.get(base, base.__name__) + (" or null" if nullable else "")
    raise ConfigError(f"policy.settings.{key}={show(value)} must be {what} for policy={policy}")
