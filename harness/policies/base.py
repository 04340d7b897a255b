"""The Policy seam and its registry (a registry per kind, as guidellm does)."""

from __future__ import annotations

from harness.errors import ConfigError

_REGISTRY: dict[str, type[Policy]] = {}


class Policy:
    """Defaults are plain vLLM: no extra flags, no extra environment."""

    name = ""
    engine_reason = ""  # why it runs only on cfg.policy.engines; said in the engine error

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

    def python(self, cfg) -> str | None:
        """Interpreter for the server if the policy needs its own environment."""
        return None

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


def register(cls: type[Policy]) -> type[Policy]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Policy:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ConfigError(
            f"policy={name} has no implementation; known: {', '.join(names())}"
        ) from None
