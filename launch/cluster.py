"""Which cluster profile a command runs on, and the user's site settings for it.

``cluster=auto`` (the default) is resolved here, before composition, in this order:

1. ``KVBENCH_CLUSTER=<profile>`` in the environment names the profile;
2. cells that need no GPU (the CPU engine: the smoke sweep) run on this machine (``local``);
3. the user's site file (below) names its ``profile``: that one (on a laptop too, so that a
   ``--dry-run`` previews what the login node would submit);
4. ``sbatch`` on the PATH: ``slurm``, a generic SLURM profile (the cluster's default
   partition; node memory read from ``sinfo``);
5. otherwise ``local`` (the lab workstation: cells one after another on its GPU).

An explicit ``cluster=<profile>`` wins over all of these.

**Site settings** are what a user of a shared cluster types on every command otherwise:
account, QOS, partition, setup lines, constraints. They live in one YAML file,
``$KVBENCH_CLUSTER_FILE`` or ``$XDG_CONFIG_HOME/kvbench/cluster.yaml`` (``~/.config/...``),
that names the profile it extends and any ``cluster.*`` field::

    profile: pace               # conf/cluster/pace.yaml
    account: gts-abc123
    qos: inferno
    setup: ["module load cuda/12.4"]

They apply whenever that profile runs (chosen by ``auto`` or named), under the command's
own ``cluster.<key>=`` overrides, which win. Unknown keys are refused with the file's name.
They are not part of a sweep's identity (``launch.sweepdir.VOLATILE``): an account change
does not make another sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError
from launch.schema import ClusterConf

AUTO = "auto"
ENV_PROFILE = "KVBENCH_CLUSTER"
ENV_FILE = "KVBENCH_CLUSTER_FILE"
GENERIC_SLURM = "slurm"
LOCAL = "local"
# Keys a site file may not set: the profile's identity.
NOT_SITE = ("name",)


def site_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV_FILE):
        return Path(env[ENV_FILE]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "kvbench" / "cluster.yaml"


@dataclass(frozen=True)
class Site:
    """The user's site file: the profile it extends and the ``cluster.*`` values it sets."""

    path: Path
    profile: str | None
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, explicit: bool) -> Site | None:
        if not path.exists():
            if explicit:
                raise ConfigError(f"{ENV_FILE}={path}: no such file")
            return None
        try:
            raw = OmegaConf.load(path)
        except (OSError, OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"site settings {path}: not readable YAML ({e})") from None
        if not isinstance(raw, DictConfig):
            raise ConfigError(f"site settings {path}: must be a mapping of cluster keys")
        data = OmegaConf.to_container(raw, resolve=True)
        assert isinstance(data, dict)
        profile = data.pop("profile", None)
        known = {f.name for f in dataclasses.fields(ClusterConf)} - set(NOT_SITE)
        bad = sorted(set(map(str, data)) - known)
        if bad:
            raise ConfigError(
                f"site settings {path}: unknown key {bad[0]}; allowed: profile, "
                f"{', '.join(sorted(known))}"
            )
        return cls(path, None if profile is None else str(profile),
                   {str(k): v for k, v in data.items()})


@dataclass(frozen=True)
class Choice:
    """The profile a command runs on, why, and the site settings that apply to it."""

    profile: str
    why: str
    site: Site | None = None

    @property
    def settings(self) -> dict[str, Any]:
        if self.site is None or self.site.profile != self.profile:
            return {}
        return self.site.settings

    def describe(self) -> str:
        where = ""
        if self.site is not None and self.settings:
            where = f"; settings from {self.site.path}: {', '.join(self.settings)}"
        return f"cluster: {self.profile} ({self.why}{where})"

    def apply(self, cfg: DictConfig, user_keys: set[str]) -> None:
        """Set the site's values on ``cfg.cluster`` where the command did not set the key."""
        for k, v in self.settings.items():
            if f"cluster.{k}" in user_keys:
                continue
            try:
                OmegaConf.update(cfg, f"cluster.{k}", v, merge=False)
            except OmegaConfBaseException as e:
                first = str(e).strip().splitlines()[0]
                raise ConfigError(f"site settings {self.site.path if self.site else ''}: "
                                  f"{k}={v!r}: {first}") from None  # fmt: skip


def resolve(asked: str | None, needs_gpu: bool, environ: Mapping[str, str] | None = None,
            which=shutil.which) -> Choice:  # fmt: skip
    """The profile for ``cluster=<asked>`` (None or ``auto``: found, as the module says)."""
    env = os.environ if environ is None else environ
    site = Site.load(site_file(env), explicit=bool(env.get(ENV_FILE)))
    if asked and asked != AUTO:
        return Choice(asked, "named on the command line", site)
    if env.get(ENV_PROFILE):
        return Choice(env[ENV_PROFILE], f"{ENV_PROFILE}={env[ENV_PROFILE]}", site)
    if not needs_gpu:
        return Choice(LOCAL, "auto: CPU-engine cells run on this machine", site)
    if site is not None and site.profile:
        return Choice(site.profile, f"auto: the profile of {site.path}", site)
    sbatch = which("sbatch")
    if sbatch:
        return Choice(GENERIC_SLURM, f"auto: sbatch found at {sbatch}", site)
    return Choice(LOCAL, "auto: no sbatch on the PATH, cells run on this machine", site)


@functools.lru_cache(maxsize=8)
def slurm_node_mem_gb(partition: str | None) -> float | None:
    """The largest node memory SLURM reports for ``partition`` (GB), or None without sinfo."""
    if not shutil.which("sinfo"):
        return None
    cmd = ["sinfo", "-h", "-N", "-o", "%m"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mbs = [int(x.rstrip("+")) for x in out.split() if x.rstrip("+").isdigit()]
    return max(mbs) / 1024 if mbs else None


def check_partition(partition: str | None) -> None:
    """Refuse a partition SLURM says does not exist (where ``sinfo`` is here to say so)."""
    if not partition or not shutil.which("sinfo"):
        return
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return  # SLURM cannot say: sbatch will
    if out and partition not in out:
        raise ConfigError(f"cluster.partition={partition} does not exist on this cluster; "
                          f"sinfo lists: {', '.join(sorted(set(out)))}")  # fmt: skip
