"""Settings schemas of the plugin policies, importable without vLLM (the launcher validates
``policy.settings`` at planning time, on a login node too). The plugin modules use these."""

from __future__ import annotations

from harness.plugins import predictors
from harness.plugins.settings import Setting

TTL_RULE_NAMES = ("fixed", "running_mean")  # continuum_ttl checks its registry matches

CONTINUUM_TTL = {
    "ttl_s": Setting(float, 2.0, "fixed TTL (s)"),
    "ttl_rule": Setting(str, "fixed", "how the TTL is chosen", TTL_RULE_NAMES),
    "ttl_scale": Setting(float, 1.5, "running_mean multiplier"),
    "ttl_max_s": Setting(float, 60.0, "upper bound on any TTL (s)"),
    "min_free_frac": Setting(float, 0.0, "release pins when free blocks < this x pool"),
    "tick_s": Setting(float, 0.01, "idle tick while pins are held (s)"),
    "stats_dir": Setting(str, None, "directory for the JSON stats snapshot"),
}

PREDICTIVE_PREFETCH = {
    "lead_s": Setting(float, 0.5, "prefetch lead (s)"),
    "predictor": Setting(str, "oracle", "tool-time predictor", tuple(predictors.PREDICTORS)),
    "host_tier_gb": Setting(float, 1.0, "host tier size (GiB)"),
    "link_gb_s": Setting(float, 0.0, "emulated host->VRAM bandwidth (GB/s), 0 = none"),
    "hold_s": Setting(float, 30.0, "hold prefetched KV this long past the predicted return"),
    "late_load": Setting(bool, True, "load from host when a turn beats its prefetch"),
    "tick_s": Setting(float, 0.01, "idle tick while work is pending (s)"),
    "stats_dir": Setting(str, None, "directory for the JSON stats snapshot"),
}

SCHEMAS = {"continuum_ttl": CONTINUUM_TTL, "predictive_prefetch": PREDICTIVE_PREFETCH}
