"""``continuum_ttl``: Continuum (arXiv 2511.02230) on mainline vLLM as plugins: TTL pinning
in a KV connector (``harness.plugins.continuum_ttl``) and, with ``sched=program``, a
scheduler class that serves pinned jobs first (``harness.plugins.pin_first``). See
docs/policies/continuum_ttl.md. Both engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.plugins import ttl_rules
from harness.policies.base import register
from harness.policies.plugin_policy import PluginPolicy, PluginSettings
from harness.policies.settings import setting, show

# The scheduler class vLLM loads (--scheduler-cls) for sched=program with pinned_first.
PIN_FIRST_SCHEDULER = "harness.plugins.pin_first.PinFirstScheduler"


@dataclass(frozen=True)
class ContinuumTtlSettings(PluginSettings):
    ttl_s: float = setting(
        2.0, "TTL (s) of fixed and fork (fork pins it while the tool's mean gap is <= ttl_s); "
        "paper's TTL until min_samples gaps were seen")
    ttl_rule: str = setting(
        "fork", "how the TTL is chosen: fork (Continuum's public code), paper (the paper's "
        "cost model over the gaps' CDF) or fixed", choices=lambda: tuple(ttl_rules.TTL_RULES))
    ttl_max_s: float = setting(60.0, "upper bound on any TTL (s)")
    min_samples: int = setting(
        100, "paper: gaps a tool needs before its own CDF is used (else the global CDF, "
        "else ttl_s)")
    eta: float = setting(1.0, "paper: the memoryfulness factor that multiplies T")
    queue_delay_s: float | None = setting(
        None, "paper: T (s); null: the mean wait of returning turns whose pin was gone, as "
        "the server observes it")
    reload_s_per_token: float = setting(
        3e-5, "paper: reload (prefill) cost per context token (s); measure it with "
        "python -m harness.plugins.reload_profile")
    pinned_first: bool = setting(
        True, "with sched=program: serve waiting turns of pinned jobs (and preempted turns) "
        "ahead of other waiting work; false: vLLM's priority order alone")
    min_free_frac: float = setting(
        0.0, "release the latest-arrived jobs' pins whenever free blocks < this x the pool")

    def check(self, policy: str) -> None:
        at_least(policy, "ttl_s", self.ttl_s, 0.0, "seconds; 0 never pins")
        above(policy, "ttl_max_s", self.ttl_max_s, 0.0, "seconds")
        at_least(policy, "min_samples", self.min_samples, 1, "gaps")
        at_least(policy, "eta", self.eta, 0.0, "")
        at_least(policy, "reload_s_per_token", self.reload_s_per_token, 0.0, "seconds")
        if self.queue_delay_s is not None:
            at_least(policy, "queue_delay_s", self.queue_delay_s, 0.0, "seconds, or null")
        if not 0.0 <= self.min_free_frac < 1.0:
            raise ConfigError(
                f"policy.settings.min_free_frac={show(self.min_free_frac)} is out of range for "
                f"policy={policy}; allowed: 0 <= min_free_frac < 1"
            )
        above(policy, "tick_s", self.tick_s, 0.0, "seconds")


def at_least(policy: str, key: str, value: Any, low: float, unit: str) -> None:
    if value < low:
        raise ConfigError(f"policy.settings.{key}={show(value)} is too small for "
                          f"policy={policy}; allowed: a number >= {low:g}"
                          + (f" ({unit})" if unit else ""))


def above(policy: str, key: str, value: Any, low: float, unit: str) -> None:
    if value <= low:
        raise ConfigError(f"policy.settings.{key}={show(value)} is too small for "
                          f"policy={policy}; allowed: a number > {low:g} ({unit})")


@register
class ContinuumTtl(PluginPolicy):
    name = "continuum_ttl"
    connector = "ContinuumTTLConnector"
    module = "harness.plugins.continuum_ttl"
    settings_type = ContinuumTtlSettings
    default_sched = "program"  # Continuum orders by program; sched=fcfs is the pin-only ablation

    @classmethod
    def scheduler_args(cls, settings: ContinuumTtlSettings, sched: str) -> list[str]:
        """``--scheduler-cls`` of the pin-first scheduler, for sched=program (the launcher's
        base arguments carry ``--scheduling-policy priority`` then); none for sched=fcfs."""
        if str(sched) == "program" and settings.pinned_first:
            return ["--scheduler-cls", PIN_FIRST_SCHEDULER]
        return []

    def server_args(self, cfg) -> list[str]:
        return super().server_args(cfg) + self.scheduler_args(self.settings(cfg), cfg.sched)

    def implementation(self, cfg) -> str:
        s = self.settings(cfg)
        order = ("program order, pinned jobs first" if self.scheduler_args(s, cfg.sched)
                 else "program order" if str(cfg.sched) == "program" else "engine FCFS order")
        return (f"kvbench's portable Continuum ({self.connector}, TTL rule {s.ttl_rule}, "
                f"{order}), on {self._engine(cfg)}")
