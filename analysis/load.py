"""Read one or several sweep folders (docs/records.md) into pandas frames.

A sweep is `results/<YYYYMMDD>_<name>/` with `sweep.json` and Hive-style cell folders
`gpu=<g>/dram=<d>/policy=<p>/jps=<j>/`. Parquet files are read with `pyarrow.dataset`
(Hive partitioning adds gpu/dram/policy/jps to every row); a `sweep` column names the
sweep folder. Cells that the sweep's matrix names but that have no folder yet are kept
as rows of `cells` without data, so a partial or running sweep reads like a finished one.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

PART_SCHEMA = pa.schema(
    [("gpu", pa.string()), ("dram", pa.int32()), ("policy", pa.string()), ("jps", pa.float64())]
)
PARTITIONING = ds.partitioning(PART_SCHEMA, flavor="hive")
KEYS = ["sweep", "gpu", "dram", "policy", "jps"]  # one cell
CELL_GLOB = "gpu=*/dram=*/policy=*/jps=*"
FILES = ("turns", "jobs", "metrics")

TURN_COLUMNS = [
    "job_id", "turn", "n_turns", "latency_s", "ttft_s", "prompt_tokens",
    "server_prompt_tokens", "cached_tokens", "retries", "status",
]
JOB_COLUMNS = [
    "job_id", "arrival_s", "start_s", "lag_s", "end_s", "jct_s", "n_turns", "turns_done",
    "status",
]
METRIC_COLUMNS = ["t_s", "name", "labels", "value"]


class SweepError(Exception):
    """A folder that is not a sweep, or a cell folder whose name does not parse."""


@dataclass
class SweepData:
    """Everything the analysis reads. Every frame carries the KEYS columns."""

    cells: pd.DataFrame  # one row per cell (found or expected), manifest fields, files present
    turns: pd.DataFrame
    jobs: pd.DataFrame
    metrics: pd.DataFrame
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # name, path, sweep.json
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> columns


def _read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return {}, f"{type(e).__name__}: {e}"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _cell_key(rel: str) -> dict[str, Any]:
    try:
        expr = PARTITIONING.parse(rel + "/")  # the last segment must be a folder
    except (pa.ArrowInvalid, ValueError) as e:
        raise SweepError(f"cell folder {rel!r} does not parse as gpu/dram/policy/jps: {e}") from e
    return ds.get_partition_keys(expr)


def _cell_row(sweep: str, root: Path, folder: Path) -> dict[str, Any]:
    rel = folder.relative_to(root).as_posix()
    manifest, manifest_error = _read_json(folder / "manifest.json")
    progress, _ = _read_json(folder / "progress.json")
    row: dict[str, Any] = {"sweep": sweep, **_cell_key(rel), "path": rel, "folder": True}
    row.update({f"has_{f}": (folder / f"{f}.parquet").is_file() for f in FILES})
    row.update(
        done=(folder / "DONE").exists(),
        has_manifest=bool(manifest),
        manifest_error=manifest_error,
        manifest_status=_get(manifest, "status"),
        failure=_get(manifest, "error"),
        lag_flag=_get(manifest, "client", "lag_flag"),
        lag_p50_s=_get(manifest, "client", "lag_p50_s"),
        lag_p99_s=_get(manifest, "client", "lag_p99_s"),
        lag_max_s=_get(manifest, "client", "lag_max_s"),
        n_jobs_spec=_get(manifest, "workload", "n_jobs"),
        n_turns_spec=_get(manifest, "workload", "n_turns"),
        seed=_get(manifest, "workload", "seed"),
        engine=_get(manifest, "engine", "name"),
        engine_version=_get(manifest, "engine", "version"),
        progress_done=_get(progress, "jobs_done"),
        progress_total=_get(progress, "jobs_total"),
    )
    return row


def _matrix_cells(sweep: str, matrix: Any) -> list[dict[str, Any]]:
    """Cells that sweep.json's matrix names: a list of cell paths, or lists per key as in
    conf/experiment (gpu, dram, dram_by_gpu, policy, jps). Empty when it does not parse."""
    if isinstance(matrix, list):
        try:
            return [{"sweep": sweep, **_cell_key(str(c).strip("/"))} for c in matrix]
        except SweepError as e:
            log.warning("sweep %s: matrix in sweep.json not understood (%s)", sweep, e)
            return []
    if not isinstance(matrix, dict):
        return []
    try:
        gpus, policies = list(matrix["gpu"]), list(matrix["policy"])
        jpss = [float(j) for j in matrix["jps"]]
        drams = [int(d) for d in matrix.get("dram") or []]
        by_gpu = {str(g): int(d) for g, d in (matrix.get("dram_by_gpu") or {}).items()}
    except (KeyError, TypeError, ValueError) as e:
        log.warning("sweep %s: matrix in sweep.json not understood (%s); using folders only",
                    sweep, e)
        return []
    out = []
    for g, p, j in itertools.product(gpus, policies, jpss):
        for d in [by_gpu[str(g)]] if str(g) in by_gpu else drams:
            out.append({"sweep": sweep, "gpu": str(g), "dram": d, "policy": str(p), "jps": j})
    return out


def discover(path: Path, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cells of one sweep folder: those on disk plus those the matrix expects."""
    if not path.is_dir():
        raise SweepError(f"{path} is not a folder")
    meta, _ = _read_json(path / "sweep.json")
    rows = [_cell_row(name, path, f) for f in sorted(path.glob(CELL_GLOB)) if f.is_dir()]
    if not rows and not meta:
        raise SweepError(f"{path} has neither sweep.json nor cell folders ({CELL_GLOB})")
    cells = pd.DataFrame(rows, columns=None if rows else KEYS)
    matrix = meta.get("matrix")
    if not matrix and isinstance(meta.get("cells"), dict):
        matrix = list(meta["cells"])
    expected = pd.DataFrame(_matrix_cells(name, matrix), columns=KEYS)
    if len(expected):
        found = cells[KEYS] if len(cells) else pd.DataFrame(columns=KEYS)
        found = found.astype({"dram": "int64", "jps": "float64"})
        merged = expected.astype({"dram": "int64"}).merge(found, on=KEYS, how="left",
                                                          indicator=True)
        absent = merged[merged["_merge"] == "left_only"][KEYS]
        if len(absent):
            log.info("sweep %s: %d cell(s) of the matrix have no folder", name, len(absent))
            cells = pd.concat([cells, absent.assign(folder=False)], ignore_index=True)
    return cells, {"name": name, "path": str(path), "meta": meta}


def _dataset_schema(files: list[str]) -> pa.Schema:
    schemas = [pq.read_schema(f) for f in files]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    fields = [f for f in unified if f.name not in PART_SCHEMA.names]
    return pa.schema(fields + list(PART_SCHEMA))


def read_files(root: Path, files: list[str], columns: list[str],
               filter_: ds.Expression | None = None) -> tuple[pa.Table, list[str]]:
    """One parquet kind of one sweep, with partition columns; also the columns it lacked."""
    schema = _dataset_schema(files)
    dataset = ds.dataset(files, schema=schema, format="parquet", partitioning=PARTITIONING,
                         partition_base_dir=str(root))
    present = [c for c in columns if c in schema.names]
    missing = [c for c in columns if c not in schema.names]
    table = dataset.to_table(columns=present + list(PART_SCHEMA.names), filter=filter_)
    for c in missing:
        table = table.append_column(c, pa.nulls(len(table), pa.float64()))
    return table, missing


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).assign(
        sweep=pd.Series(dtype="str"), gpu=pd.Series(dtype="str"),
        dram=pd.Series(dtype="int32"), policy=pd.Series(dtype="str"),
        jps=pd.Series(dtype="float64"))


def _read_kind(root: Path, name: str, cells: pd.DataFrame, kind: str, columns: list[str],
               filter_: ds.Expression | None, missing: dict[str, list[str]]) -> pd.DataFrame:
    have = cells[cells.get(f"has_{kind}", pd.Series(False, index=cells.index)).fillna(False)
                 .astype(bool)]
    files = [str(root / p / f"{kind}.parquet") for p in have["path"]]
    if not files:
        return _empty(columns)
    table, lacking = read_files(root, files, columns, filter_)
    if lacking:
        log.warning("sweep %s: %s.parquet lacks column(s) %s", name, kind, lacking)
        missing.setdefault(kind, []).extend(c for c in lacking if c not in missing.get(kind, []))
    df = table.to_pandas()
    df.insert(0, "sweep", name)
    return df


def _names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        n = p.resolve().name
        names.append(n if n not in names else f"{n}#{len(names) + 1}")
    return names


def load(paths: list[str | Path], metric_names: list[str] | None = None) -> SweepData:
    """Read sweeps; metrics are limited to metric_names when given (pushed into the scan)."""
    roots = [Path(p) for p in paths]
    frames: dict[str, list[pd.DataFrame]] = {"cells": [], "turns": [], "jobs": [], "metrics": []}
    sweeps: list[dict[str, Any]] = []
    missing: dict[str, list[str]] = {}
    mfilter = ds.field("name").isin(metric_names) if metric_names else None
    for root, name in zip(roots, _names(roots), strict=True):
        cells, meta = discover(root, name)
        sweeps.append(meta)
        frames["cells"].append(cells)
        frames["turns"].append(_read_kind(root, name, cells, "turns", TURN_COLUMNS, None, missing))
        frames["jobs"].append(_read_kind(root, name, cells, "jobs", JOB_COLUMNS, None, missing))
        frames["metrics"].append(
            _read_kind(root, name, cells, "metrics", METRIC_COLUMNS, mfilter, missing))
    out = {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
    for k in ("turns", "jobs", "metrics"):
        out[k] = normalize_keys(out[k])
    cells = normalize_keys(out["cells"])
    cells = cells[KEYS + [c for c in cells.columns if c not in KEYS]]
    cells = cells.sort_values(KEYS, ignore_index=True)
    log.info("loaded %d sweep(s): %d cells, %d turn rows, %d job rows, %d metric rows",
             len(roots), len(cells), len(out["turns"]), len(out["jobs"]), len(out["metrics"]))
    return SweepData(cells, out["turns"], out["jobs"], out["metrics"], sweeps, missing)


def normalize_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Same dtypes for the cell keys in every frame, so that merges line up."""
    return df.astype({"sweep": "str", "gpu": "str", "dram": "int64", "policy": "str",
                      "jps": "float64"})
