"""Read one or several sweep folders (docs/records.md) into pandas frames.

A sweep is `results/<YYYYMMDD>_<name>/` with `sweep.json` and one folder per cell
(`harness.cellkey.CellKey.rel_dir`). A cell's axis values come from its manifest
(`harness.records.Manifest`), the folder name only where no manifest can be read. Parquet
files are read with one `pyarrow.dataset` per kind whose per-file partition expressions
carry those values, so every row gets the axis columns; a `sweep` column names the sweep
folder. Cells that the sweep's matrix names but that have no folder yet are kept as rows of
`cells` without data, so a partial or running sweep reads like a finished one.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness import records
from harness.cellkey import (
    ARROW_SCHEMA,
    AXES,
    NAMES,
    PANDAS_DTYPES,
    CellKey,
    CellKeyError,
    iter_cell_dirs,
)

log = logging.getLogger(__name__)

KEYS = ["sweep", *NAMES]  # one cell
FILES = tuple(records.SCHEMAS)  # turns, jobs, metrics

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


def _manifest(folder: Path) -> tuple[records.Manifest | None, str | None]:
    raw, error = _read_json(folder / records.MANIFEST)
    if not raw:
        return None, error
    try:
        return records.Manifest.from_json(raw), None
    except (CellKeyError, ValueError, TypeError) as e:
        log.warning("cannot read %s: %s", folder / records.MANIFEST, e)
        return None, f"{type(e).__name__}: {e}"


def _cell_row(sweep: str, root: Path, folder: Path, path_key: CellKey) -> dict[str, Any]:
    rel = folder.relative_to(root).as_posix()
    man, manifest_error = _manifest(folder)
    progress, _ = _read_json(folder / records.PROGRESS)
    counts, _ = _read_json(folder / records.LOG_COUNTS)  # what the policy's log said (LMCache)
    key = man.cell if man is not None else path_key
    if key != path_key:
        log.warning("sweep %s: %s holds the manifest of %s; using the manifest's", sweep, rel,
                    key.rel_dir)
    client = man.client if man is not None else None
    kv = _get(man.server, "kv_cache") if man is not None else None  # harness.cell.kv_cache
    wl = man.workload if man is not None else {}
    row: dict[str, Any] = {"sweep": sweep, **key.as_dict(), "path": rel, "folder": True}
    row.update({f"has_{f}": (folder / f"{f}.parquet").is_file() for f in FILES})
    row.update(
        done=records.is_done(folder),
        has_manifest=man is not None,
        manifest_error=manifest_error,
        manifest_status=man.status if man is not None else None,
        failure=man.error if man is not None else None,
        lag_flag=client.lag_flag if client else None,
        lag_p50_s=client.lag_p50_s if client else None,
        lag_p99_s=client.lag_p99_s if client else None,
        lag_max_s=client.lag_max_s if client else None,
        n_jobs_spec=wl.get("n_jobs"),
        n_turns_spec=wl.get("n_turns"),
        seed=wl.get("seed"),
        engine=man.engine.name if man is not None else None,
        engine_version=(man.engine.installed_version or man.engine.pinned_version)
        if man is not None else None,
        progress_done=_get(progress, "jobs_done"),
        progress_total=_get(progress, "jobs_total"),
        kv_cache_tokens=_get(kv, "tokens"),
        kv_cache_gib=_get(kv, "gib"),
        write_through_gib=_get(kv, "write_through_gib"),
        log_bytes_offload=_get(counts, "bytes_offload"),
        log_bytes_onload=_get(counts, "bytes_onload"),
        log_counts=counts or None,
    )
    return row


def _matrix_cells(sweep: str, matrix: Any) -> list[dict[str, Any]]:
    """Cells that sweep.json's matrix names: a list of cell paths (what launch writes), or
    lists per axis as in conf/experiment (with ``dram_by_gpu``). Empty when it does not
    parse."""
    try:
        if isinstance(matrix, list):
            keys = [CellKey.from_rel(str(c)) for c in matrix]
        elif isinstance(matrix, dict):
            keys = _expand(matrix)
        else:
            return []
    except (CellKeyError, KeyError, TypeError, ValueError) as e:
        log.warning("sweep %s: matrix in sweep.json not understood (%s); using folders only",
                    sweep, e)
        return []
    return [{"sweep": sweep, **k.as_dict()} for k in keys]


def _expand(matrix: dict[str, Any]) -> list[CellKey]:
    partial: list[dict[str, Any]] = [{}]
    for a in AXES:
        by_gpu = {str(g): v for g, v in (matrix.get(f"{a.name}_by_gpu") or {}).items()}
        if a.name not in matrix and not by_gpu and a.has_legacy:
            continue  # an axis the sweep predates: its legacy value
        partial = [{**p, a.name: v} for p in partial
                   for v in ([by_gpu[str(p.get("gpu"))]] if str(p.get("gpu")) in by_gpu
                             else list(matrix[a.name] or []))]
    return [CellKey.from_mapping(p) for p in partial]


def discover(path: Path, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cells of one sweep folder: those on disk plus those the matrix expects."""
    if not path.is_dir():
        raise SweepError(f"{path} is not a folder")
    meta, _ = _read_json(path / "sweep.json")
    try:
        rows = [_cell_row(name, path, f, k) for f, k in iter_cell_dirs(path)]
    except CellKeyError as e:
        raise SweepError(str(e)) from e
    if not rows and not meta:
        raise SweepError(f"{path} has neither sweep.json nor cell folders "
                         f"({'/'.join(f'{n}=*' for n in NAMES)})")
    cells = pd.DataFrame(rows, columns=None if rows else KEYS)
    matrix = meta.get("matrix")
    if not matrix and isinstance(meta.get("cells"), dict):
        matrix = list(meta["cells"])
    expected = normalize_keys(pd.DataFrame(_matrix_cells(name, matrix), columns=KEYS))
    if len(expected):
        found = normalize_keys(cells[KEYS] if len(cells) else pd.DataFrame(columns=KEYS))
        merged = expected.merge(found, on=KEYS, how="left", indicator=True)
        absent = merged[merged["_merge"] == "left_only"][KEYS]
        if len(absent):
            log.info("sweep %s: %d cell(s) of the matrix have no folder", name, len(absent))
            cells = pd.concat([cells, absent.assign(folder=False)], ignore_index=True)
    return cells, {"name": name, "path": str(path), "meta": meta}


def _dataset_schema(files: list[str]) -> pa.Schema:
    schemas = [pq.read_schema(f) for f in files]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    fields = [f for f in unified if f.name not in ARROW_SCHEMA.names]
    return pa.schema(fields + list(ARROW_SCHEMA))


def _partition(key: CellKey) -> ds.Expression:
    """The cell's axis values as a dataset partition expression (each row gets them)."""
    parts = [ds.field(a.name) == pa.scalar(getattr(key, a.name), a.arrow) for a in AXES]
    return functools.reduce(operator.and_, parts)


def read_files(files: list[str], keys: list[CellKey], columns: list[str],
               filter_: ds.Expression | None = None) -> tuple[pa.Table, list[str]]:
    """One parquet kind of one sweep, with the axis columns of each file's cell; also the
    columns it lacked."""
    schema = _dataset_schema(files)
    dataset = ds.FileSystemDataset.from_paths(
        files, schema=schema, format=ds.ParquetFileFormat(), filesystem=pafs.LocalFileSystem(),
        partitions=[_partition(k) for k in keys])
    present = [c for c in columns if c in schema.names]
    missing = [c for c in columns if c not in schema.names]
    table = dataset.to_table(columns=present + list(ARROW_SCHEMA.names), filter=filter_)
    for c in missing:
        table = table.append_column(c, pa.nulls(len(table), pa.float64()))
    return table, missing


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).assign(
        sweep=pd.Series(dtype="str"),
        **{n: pd.Series(dtype=t) for n, t in PANDAS_DTYPES.items()})


def _read_kind(root: Path, name: str, cells: pd.DataFrame, kind: str, columns: list[str],
               filter_: ds.Expression | None, missing: dict[str, list[str]]) -> pd.DataFrame:
    have = cells[cells.get(f"has_{kind}", pd.Series(False, index=cells.index)).fillna(False)
                 .astype(bool)]
    files = [str(root / p / f"{kind}.parquet") for p in have["path"]]
    if not files:
        return _empty(columns)
    keys = [CellKey.from_mapping(r) for r in have[list(NAMES)].to_dict("records")]
    table, lacking = read_files(files, keys, columns, filter_)
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


def cell_of(row: Any) -> CellKey:
    """The CellKey of a frame row (a Series or a dict with the axis columns)."""
    return CellKey.from_mapping({n: row.get(n) for n in NAMES})


def normalize_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Same dtypes for the cell keys in every frame, so that merges line up."""
    return df.astype({"sweep": "str", **PANDAS_DTYPES})
