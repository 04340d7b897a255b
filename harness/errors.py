"""Failures of our own set-up (as opposed to failures of the system under test, which are
data: rows with an error). One small hierarchy, as in submitit's core."""


class KvbenchError(Exception):
    """Base of every error kvbench raises on purpose."""


class ConfigError(KvbenchError):
    """Bad input: raised at planning time, before anything is submitted."""


class ServerStartError(KvbenchError):
    """The vLLM server did not become healthy; the message carries its log tail."""


class CellFailed(KvbenchError):
    """A cell ran but did not complete (its records say why)."""
