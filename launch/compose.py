"""Compose configs with Hydra and expand the GPU x DRAM x policy x JPS matrix into cells.

The matrix axes (``gpu``, ``dram``, ``policy``, ``jps``) take one value or several on the
command line (``gpu=h100,h200``, ``jps=[3,6]``); any other override applies to every cell.
Values the command does not give come from ``experiment.matrix``. Each cell is then composed
as a whole config (``gpu=<g> dram=<d> policy=<p> jps=<j>`` plus the command's overrides), so
every cell is validated by the schema exactly as it will run.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError
from launch import schema

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
AXES = ("gpu", "dram", "policy", "jps")
GROUPS = ("gpu", "dram", "policy", "model", "workload", "engine", "cluster", "experiment")


@dataclass(frozen=True)
class Cell:
    gpu: str
    dram: int
    policy: str
    jps: float

    @property
    def rel_dir(self) -> str:
        return f"gpu={self.gpu}/dram={self.dram}/policy={self.policy}/jps={fmt_jps(self.jps)}"


def fmt_jps(j: float) -> str:
    return str(int(j)) if float(j).is_integer() else repr(float(j))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@contextmanager
def hydra_context():
    schema.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(_explain(e)) from None


def _explain(e: Exception) -> str:
    msg = str(e).strip()
    if e.__cause__ is not None:
        msg = f"{msg}: {str(e.__cause__).splitlines()[0]}"
    for group in GROUPS:
        if f"'{group}/" in msg and "Could not find" in msg:
            bad = msg.split(f"'{group}/", 1)[1].split("'", 1)[0]
            return f"{group}={bad} is unknown; allowed: {', '.join(options(group))}"
    return " ".join(msg.split())


def _group_yaml(group: str, name: str) -> DictConfig:
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{group}={name} is unknown; allowed: {', '.join(options(group))}")
    return OmegaConf.load(path)


def split_overrides(overrides: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Pull the matrix axes out of the overrides; return (axes, the rest)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"cannot parse overrides: {' '.join(str(e).split())}") from None
    axes: dict[str, list[str]] = {}
    rest: list[str] = []
    for raw, o in zip(overrides, parsed, strict=True):
        key = o.key_or_group
        if key in AXES:
            axes[key] = _values(o)
        elif o.is_sweep_override():
            raise ConfigError(
                f"{key}: only the matrix axes ({', '.join(AXES)}) take several values; "
                f"got {raw!r}"
            )
        else:
            rest.append(raw)
    return axes, rest


def _values(o) -> list[str]:
    if o.is_sweep_override():
        return [str(v) for v in o.sweep_string_iterator()]
    v = o.value()
    if isinstance(v, list):
        return [str(x) for x in v]
    return [str(v)]


def parse_jps(values: list) -> list[float]:
    out = []
    for v in values:
        try:
            j = float(v)
        except (TypeError, ValueError):
            j = float("nan")
        if not j > 0 or j == float("inf"):
            raise ConfigError(f"jps={v} is not a positive number of jobs per second (e.g. jps=3 or jps=[1,3,6])")
        out.append(j)
    return out


class Planner:
    """Composes the base config and every cell's config, caching what cells share."""

    def __init__(self, overrides: list[str]) -> None:
        self.axes, rest = split_overrides(overrides)
        self.user_keys = {o.split("=", 1)[0].lstrip("+~") for o in rest}
        exp_over = [o for o in rest if o.split("=", 1)[0] == "experiment"]
        first = _compose(exp_over)
        self.base_overrides = list(first.experiment.overrides) + rest
        self.base = _compose(self.base_overrides)
        self._engine_for_gpu: dict[str, list[str]] = {}
        self._cache: dict[tuple[str, int, str], DictConfig] = {}

    def cells(self) -> list[Cell]:
        m = self.base.experiment.matrix
        gpus = self.axes.get("gpu") or list(m.gpu)
        policies = self.axes.get("policy") or list(m.policy)
        jps = parse_jps(self.axes.get("jps") or list(m.jps))
        out = []
        for g in gpus:
            drams = self._drams(g)
            for d, p, j in itertools.product(drams, policies, jps):
                out.append(Cell(g, d, p, j))
        return out

    def _drams(self, gpu: str) -> list[int]:
        m = self.base.experiment.matrix
        raw = self.axes.get("dram")
        if raw is None:
            raw = [m.dram_by_gpu[gpu]] if gpu in m.dram_by_gpu else list(m.dram)
        out = []
        for v in raw:
            if str(v) not in options("dram"):
                raise ConfigError(f"dram={v} is unknown; allowed: {', '.join(sorted(options('dram'), key=int))}")
            out.append(int(v))
        return out

    def _derived(self, gpu: str) -> list[str]:
        """engine=/model= that follow from the gpu, unless the command set them."""
        if gpu not in self._engine_for_gpu:
            extra: list[str] = []
            engine = self.base.engine.name
            if "engine" not in self.user_keys:
                engine = _group_yaml("gpu", gpu).get("default_engine", "vllm-cuda")
                extra.append(f"engine={engine}")
            if "model" not in self.user_keys:
                extra.append(f"model={_group_yaml('engine', engine).default_model}")
            self._engine_for_gpu[gpu] = extra
        return self._engine_for_gpu[gpu]

    def config(self, cell: Cell) -> DictConfig:
        key = (cell.gpu, cell.dram, cell.policy)
        if key not in self._cache:
            if cell.gpu not in options("gpu"):
                raise ConfigError(f"gpu={cell.gpu} is unknown; allowed: {', '.join(options('gpu'))}")
            if cell.policy not in options("policy"):
                raise ConfigError(
                    f"policy={cell.policy} is unknown; allowed: {', '.join(options('policy'))}"
                )
            over = self.base_overrides + [f"gpu={cell.gpu}", f"dram='{cell.dram}'", f"policy={cell.policy}"]
            self._cache[key] = _compose(over + self._derived(cell.gpu))
        cfg = self._cache[key].copy()
        OmegaConf.set_struct(cfg, False)
        cfg.jps = float(cell.jps)
        OmegaConf.set_struct(cfg, True)
        return cfg
