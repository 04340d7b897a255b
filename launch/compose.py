"""Compose configs with Hydra and expand the matrix of cell axes into cells.

The matrix axes are those of :class:`harness.cellkey.CellKey` (``gpu``, ``dram``,
``policy``, ``sched``, ``jps``); each takes one value or several on the command line
(``gpu=h100,h200``, ``jps=[3,6]``); any other override applies to every cell. Values the
command does not give come from ``experiment.matrix``. Each cell is then composed as a whole
config (the group axes select ``conf/<axis>/<value>.yaml``, the others set their key) plus
the command's overrides, so every cell is validated by the schema exactly as it will run.
"""

from __future__ import annotations

import functools
import typing
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness import policies
from harness.cellkey import AXES, BY_NAME, NAMES, CellKey, CellKeyError, fmt_value
from harness.errors import ConfigError
from launch import cluster, schema

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
GROUPS = ("gpu", "dram", "policy", "model", "workload", "engine", "cluster", "experiment")
# What a command that names a GPU (and no experiment) plans: the seed's sweep for that GPU.
GPU_EXPERIMENT = "seed"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def allowed(group: str) -> list[str]:
    """What a command may name for ``group`` (its YAML files, and ``cluster=auto``)."""
    return [cluster.AUTO, *options(group)] if group == "cluster" else options(group)


def sweep_name(cells: list[CellKey]) -> str:
    """The folder name of a sweep whose experiment has none: its GPUs and DRAM sizes
    (``h100_dram400``, ``h100-a100_dram400-200``)."""
    gpus = dict.fromkeys(c.gpu for c in cells)
    drams = dict.fromkeys(fmt_value(c.dram) for c in cells)
    return f"{'-'.join(gpus)}_dram{'-'.join(drams)}"


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
    except yaml.YAMLError as e:  # a config file that is not YAML: say which and where
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None


def _explain(e: Exception) -> str:
    msg = str(e).strip()
    if e.__cause__ is not None:
        msg = f"{msg}: {str(e.__cause__).splitlines()[0]}"
    for group in GROUPS:
        if f"'{group}/" in msg and "Could not find" in msg:
            bad = msg.split(f"'{group}/", 1)[1].split("'", 1)[0]
            return f"{group}={bad} is unknown; allowed: {', '.join(allowed(group))}"
    return " ".join(msg.split())


def _group_yaml(group: str, name: str) -> DictConfig:
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{group}={name} is unknown; allowed: {', '.join(options(group))}")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} is not a mapping")
    return cfg


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
        if key in NAMES:
            axes[key] = _values(o)
            if not axes[key]:
                raise ConfigError(f"{raw}: names no {key}; give one value or a list "
                                  f"({key}=<value> or {key}=[<a>,<b>])")  # fmt: skip
        elif o.is_sweep_override():
            raise ConfigError(
                f"{key}: only the matrix axes ({', '.join(NAMES)}) take several values; "
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


@functools.cache
def _enum_of(key: str) -> type[Enum] | None:
    """The enum a top-level config key is typed with in the schema (None: not an enum)."""
    hint = typing.get_type_hints(schema.Config).get(key)
    return hint if isinstance(hint, type) and issubclass(hint, Enum) else None


def parse_jps(values: list) -> list[float]:
    out = []
    for v in values:
        try:
            j = float(v)
        except (TypeError, ValueError):
            j = float("nan")
        if not j > 0 or j == float("inf"):
            raise ConfigError(
                f"jps={v} is not a positive number of jobs per second (e.g. jps=3 or jps=[1,3,6])"
            )
        out.append(j)
    return out


def _any_cuda(gpus: list[str]) -> bool:
    """Whether any of these GPU configs needs a CUDA device (``gpu.cuda``)."""
    return any(_group_yaml("gpu", g).get("cuda", True) for g in gpus)


class Planner:
    """Composes the base config and every cell's config, caching what cells share.

    Two defaults are decided here, before composition: the experiment (a command that names
    a GPU and no experiment plans :data:`GPU_EXPERIMENT`, the seed's sweep for that GPU; the
    smoke stays the default otherwise) and the cluster profile (``cluster=auto``:
    :func:`launch.cluster.resolve`, whose site settings are then set on every config).
    """

    def __init__(self, overrides: list[str], environ: dict[str, str] | None = None) -> None:
        self.axes, rest = split_overrides(overrides)
        self.user_keys = {o.split("=", 1)[0].lstrip("+~") for o in rest}
        exp_over = [o for o in rest if o.split("=", 1)[0] == "experiment"]
        self.experiment_defaulted = not exp_over and self._names_a_gpu()
        if self.experiment_defaulted:
            exp_over = [f"experiment={GPU_EXPERIMENT}"]
        first = _compose(exp_over)
        asked = [o.split("=", 1)[1] for o in rest if o.split("=", 1)[0] == "cluster"]
        self.cluster = cluster.resolve(asked[-1] if asked else None,
                                       self._needs_gpu(first), environ)  # fmt: skip
        rest = [o for o in rest if o.split("=", 1)[0] not in ("cluster", "experiment")]
        self.base_overrides = [*first.experiment.overrides, *exp_over, *rest,
                               f"cluster={self.cluster.profile}"]  # fmt: skip
        self.base = self._site(_compose(self.base_overrides))
        self._engine_for_gpu: dict[str, list[str]] = {}
        self._cache: dict[tuple[tuple[str, Any], ...], DictConfig] = {}
        self._name: str | None = self.base.experiment.name

    def _names_a_gpu(self) -> bool:
        return _any_cuda(self.axes.get("gpu", []))

    def _needs_gpu(self, first: DictConfig) -> bool:
        return _any_cuda(self.axes.get("gpu") or [str(g) for g in first.experiment.matrix.gpu])

    def _site(self, cfg: DictConfig) -> DictConfig:
        self.cluster.apply(cfg, self.user_keys)
        return cfg

    def cells(self) -> list[CellKey]:
        """Every cell of the matrix, in axis order (the first axis varies slowest)."""
        partial: list[dict[str, Any]] = [{}]
        for a in AXES:
            partial = [{**p, a.name: v} for p in partial for v in self._axis_values(a.name, p)]
        cells = [CellKey(**p) for p in partial]
        if self._name is None and cells:
            self._name = sweep_name(cells)
            self._set_name(self.base)
        return cells

    def _set_name(self, cfg: DictConfig) -> None:
        if self._name is not None and cfg.experiment.name != self._name:
            OmegaConf.update(cfg, "experiment.name", self._name, merge=False)

    def _axis_values(self, name: str, chosen: dict[str, Any]) -> list[Any]:
        """The values of one axis: the command's, else the experiment's matrix, where
        ``<axis>_by_<earlier axis>`` pairs values with the value chosen before it
        (``dram_by_gpu``: a DRAM size per GPU; ``sched_by_policy``: orders per policy), else
        for ``sched`` the policy's default order."""
        m = self.base.experiment.matrix
        raw = self.axes.get(name)
        for earlier, value in chosen.items():  # <axis>_by_<earlier axis>: pairs, if set
            paired = m.get(f"{name}_by_{earlier}") or {}
            if raw is None and str(value) in paired:
                v = paired[str(value)]
                raw = list(v) if OmegaConf.is_list(v) or isinstance(v, list) else [v]
        if raw is None and name == "sched" and m.get("sched") is None:
            impl = policies.impl_name(_group_yaml("policy", chosen["policy"]))
            raw = [policies.get_class(impl).default_sched]
        if raw is None:
            raw = list(m[name])
        return [self._check_value(name, v) for v in raw]

    def _check_value(self, name: str, value: Any) -> Any:
        a = BY_NAME[name]
        if name == "jps":
            return parse_jps([value])[0]
        kind = _enum_of(a.source)
        if kind is not None:
            if str(value) not in [k.value for k in kind]:
                raise ConfigError(f"{name}={value} is unknown; allowed: "
                                  f"{', '.join(k.value for k in kind)}")
            return str(value)
        try:
            v = a.parse(value)
        except CellKeyError:
            v = value
        if a.group and fmt_value(v) not in options(name):
            allowed = options(name)
            if a.kind is not str:
                allowed = sorted(allowed, key=float)
            raise ConfigError(f"{name}={value} is unknown; allowed: {', '.join(allowed)}")
        return v

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

    def config(self, cell: CellKey) -> DictConfig:
        """The cell's whole config: the group axes composed (cached: cells that differ only in
        the other axes share one composition), the other axes set on a copy."""
        groups = tuple((a.name, getattr(cell, a.name)) for a in AXES if a.group)
        if groups not in self._cache:
            over = self.base_overrides + [f"{n}='{fmt_value(v)}'" for n, v in groups]
            self._cache[groups] = self._site(_compose(over + self._derived(cell.gpu)))
        cfg = self._cache[groups].copy()
        OmegaConf.set_struct(cfg, False)
        self._set_name(cfg)
        for a in AXES:
            if not a.group:
                OmegaConf.update(cfg, a.source, getattr(cell, a.name), merge=False)
        OmegaConf.set_struct(cfg, True)
        return cfg
