"""The records contract between harness and analysis (docs/records.md), in one module.

The harness writes, and analysis and the synthetic sweep (``analysis.synth``) read and write,
through what is defined here: the Arrow schemas of ``turns``, ``jobs`` and ``metrics``, the
typed :class:`Manifest` (with a version number; :meth:`Manifest.from_json` reads every
earlier version), the completion marker, and atomic writers. Every file is written whole
before it gets its name (harness/atomic.py: an unnamed file linked into place, or
``.<name>.tmp`` renamed), so a reader never sees half a file and a kill leaves at most a
hidden temporary. Its mode is what the user's umask gives a new file (``0o666 & ~umask``),
never world-writable (:func:`file_mode`), whatever the writer library or a leftover
temporary had. A write that fails (a full disk: :func:`disk_full`) leaves no temporary and
raises; :func:`write_failure` words it in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from harness import atomic
from harness.cellkey import CellKey

TURNS = pa.schema(
    [
        ("job_id", pa.int32()), ("turn", pa.int16()), ("n_turns", pa.int16()),
        ("arrival_s", pa.float64()), ("sent_s", pa.float64()), ("first_token_s", pa.float64()),
        ("last_token_s", pa.float64()), ("latency_s", pa.float64()), ("ttft_s", pa.float64()),
        ("prompt_tokens", pa.int32()), ("server_prompt_tokens", pa.int32()),
        ("cached_tokens", pa.int32()), ("completion_tokens", pa.int32()),
        ("tool_s", pa.float64()), ("retries", pa.int16()), ("status", pa.string()),
        ("error", pa.string()), ("priority", pa.int32()),
    ]
)  # fmt: skip

JOBS = pa.schema(
    [
        ("job_id", pa.int32()), ("arrival_s", pa.float64()), ("start_s", pa.float64()),
        ("lag_s", pa.float64()), ("end_s", pa.float64()), ("jct_s", pa.float64()),
        ("n_turns", pa.int16()), ("turns_done", pa.int16()), ("status", pa.string()),
    ]
)  # fmt: skip

METRICS = pa.schema(
    [("t_s", pa.float64()), ("name", pa.string()), ("labels", pa.string()), ("value", pa.float64())]
)


SCHEMAS = {"turns": TURNS, "jobs": JOBS, "metrics": METRICS}  # <kind>.parquet of a cell

DONE = "DONE"  # the completion marker, written last
MANIFEST = "manifest.json"
PROGRESS = "progress.json"  # a measuring cell's progress (Progress), removed when it ends
# What a policy counted that only its log says (Policy.log_counts: LMCache's lookups, stores,
# loads), read from the cell's slice of the server log when the cell ends; its byte totals
# stand in for Prometheus offload counters the policy does not export (analysis/why.py).
LOG_COUNTS = "log_counts.json"
# Space a running cell holds in its folder (hidden, so ignored by readers), given back to write
# its manifest if the disk fills: the cell's failure is recorded even on a full disk.
RESERVE = ".reserve"
RESERVE_BYTES = 256 * 1024
MANIFEST_VERSION = 2
# Versions of manifest.json (``kvbench_manifest``):
#   (none) synthetic sweeps of analysis.synth before v2; read as v1.
#   1      engine {name, pinned_version}; analysis read a "version" key that was never written.
#   2      engine {name, pinned_version, installed_version}; the cell holds every axis of
#          harness.cellkey (a v1 cell reads with later axes at their legacy values).
# ok: measured to its end (only ok cells get DONE); failed: our side failed; interrupted: a
# signal stopped it (cancel, Ctrl-C, the scheduler's pre-emption); failed and interrupted cells
# run again on the next sweep. A "running" manifest whose process is gone was killed outright.
STATUSES = ("running", "ok", "failed", "interrupted")


@dataclass
class EngineInfo:
    name: str
    pinned_version: str | None = None  # engine.version in the config
    installed_version: str | None = None  # what the cell found installed (None: unknown)


@dataclass
class ClientSummary:
    """What the client reports of its own run; ``lag_flag`` marks a cell not to trust."""

    t0_unix: float | None = None
    wall_s: float | None = None
    jobs_ok: int = 0
    jobs_failed: int = 0
    error_rows: int = 0
    retries: int = 0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    lag_limit_s: float | None = None
    lag_flag: bool = False
    # Client processes that sent the requests (harness.shards); a manifest written before
    # there were several reads 1, which is what ran. workers_basis: how the number was chosen.
    workers: int = 1
    workers_basis: str | None = None


@dataclass
class Manifest:
    """A cell's ``manifest.json``: what ran, where, how it ended. docs/records.md."""

    cell: CellKey
    status: str = "running"  # one of STATUSES; only ok cells get DONE
    error: str | None = None
    engine: EngineInfo = field(default_factory=lambda: EngineInfo(""))
    config: dict[str, Any] = field(default_factory=dict)  # resolved, without secrets
    workload: dict[str, Any] = field(default_factory=dict)  # its config + summary (n_jobs, digest)
    client: ClientSummary | None = None
    server: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)  # pid, host, started_unix of the writer
    scheduler: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    times: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("version")
        d["cell"] = self.cell.as_dict()
        d["engine"] = asdict(self.engine)
        d["client"] = asdict(self.client) if self.client is not None else None
        if self.error is None:
            d.pop("error")
        return {"kvbench_manifest": self.version, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        """Any version of manifest.json; missing parts take their defaults."""
        version = int(d.get("kvbench_manifest") or 1)
        if version > MANIFEST_VERSION:
            raise ValueError(f"manifest version {version} is newer than this kvbench reads "
                             f"({MANIFEST_VERSION}); update kvbench")
        eng = d.get("engine") or {}
        installed = eng.get("installed_version")
        if installed is None and version < 2:  # v1: from the versions of the packages
            package = ((d.get("config") or {}).get("engine") or {}).get("package")
            installed = (d.get("versions") or {}).get(package) or eng.get("version")
        client = d.get("client")
        known = {f.name for f in dataclasses.fields(ClientSummary)}
        return cls(
            cell=CellKey.from_manifest(d),
            status=str(d.get("status") or "running"),
            error=d.get("error"),
            engine=EngineInfo(str(eng.get("name") or ""), eng.get("pinned_version"), installed),
            config=d.get("config") or {},
            workload=d.get("workload") or {},
            client=ClientSummary(**{k: v for k, v in client.items() if k in known})
            if isinstance(client, dict) else None,
            server=d.get("server") or {},
            versions=d.get("versions") or {},
            git=d.get("git") or {},
            host=d.get("host") or {},
            process=d.get("process") or {},
            scheduler=d.get("scheduler") or {},
            attempt=int(d.get("attempt") or 1),
            times=d.get("times") or {},
            version=version,
        )

    def write(self, cell_dir: Path) -> Path:
        return write_json(self.to_json(), Path(cell_dir) / MANIFEST)

    @classmethod
    def read(cls, cell_dir: Path) -> Manifest:
        return cls.from_json(json.loads((Path(cell_dir) / MANIFEST).read_text()))


def is_done(cell_dir: Path) -> bool:
    return (Path(cell_dir) / DONE).exists()


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def turn_rows(turns) -> list[dict[str, Any]]:
    rows = []
    for t in turns:
        r = asdict(t)
        r["latency_s"] = _diff(t.last_token_s, t.sent_s) if t.status == "ok" else None
        r["ttft_s"] = _diff(t.first_token_s, t.sent_s)
        rows.append(r)
    return rows


def job_rows(jobs) -> list[dict[str, Any]]:
    rows = []
    for j in jobs:
        r = asdict(j)
        r["lag_s"] = _diff(j.start_s, j.arrival_s)
        r["jct_s"] = _diff(j.end_s, j.arrival_s) if j.status == "ok" else None
        rows.append(r)
    return rows


# the modes and the temporary's name live with the writer (harness/atomic.py)
tmp_path, current_umask, file_mode = atomic.tmp_path, atomic.current_umask, atomic.file_mode


def no_world_write() -> None:
    """Add world-write to this process' umask: no file or folder that it or its children
    (the server) create is world-writable; the rest of the user's umask stands."""
    os.umask(current_umask() | 0o002)


def _write(path: Path, write: Callable[[BinaryIO], object], gap_ok: bool = False) -> Path:
    """Write ``path`` anew through :func:`harness.atomic.replace` with the mode
    :func:`file_mode` gives. A failed write leaves the target untouched and no temporary; its
    error names the file (pyarrow's and write()'s do not)."""
    try:
        return atomic.replace(path, write, gap_ok=gap_ok)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def write_table(rows: list[dict] | dict[str, list], schema: pa.Schema, path: Path) -> Path:
    if isinstance(rows, dict):
        table = pa.Table.from_pydict(rows, schema=schema)
    else:
        table = pa.Table.from_pylist(rows, schema=schema)
    return write_parquet(table, path)


def write_parquet(table: pa.Table, path: Path) -> Path:
    return _write(path, lambda f: pq.write_table(table, f))


def write_json(obj: Any, path: Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_text(text, path)


def write_text(text: str, path: Path, gap_ok: bool = False) -> Path:
    data = text.encode()
    return _write(path, lambda f: f.write(data), gap_ok)


# --- a full disk ------------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException | None) -> bool:
    """The error (or one it was raised from) says the disk or the quota is full. pyarrow's
    errors carry the errno in their text only ("[errno 28] No space left on device")."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and (
            exc.errno in DISK_FULL_ERRNOS
            or "no space left on device" in str(exc).lower()
            or "disk quota exceeded" in str(exc).lower()
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def mount_point(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_note(path: Path) -> str:
    """``<mount point>: <free> free of <total>`` for the disk that holds ``path``."""
    mount = mount_point(path)
    try:
        du = shutil.disk_usage(mount)
    except OSError as e:
        return f"{mount}: usage unknown ({e.strerror or e})"
    return f"{mount}: {_size(du.free)} free of {_size(du.total)}"


def write_failure(exc: BaseException, path: Path | None) -> str:
    """One line for a record that could not be written to ``path``: ``disk full (ENOSPC): no
    space left on device writing <path> (<mount>: 0 B free of 8.0 MiB)``, else the error."""
    target = f" writing {path} ({disk_note(path)})" if path is not None else ""
    if disk_full(exc):
        code = "EDQUOT" if getattr(exc, "errno", None) == errno.EDQUOT else "ENOSPC"
        what = "disk quota exceeded" if code == "EDQUOT" else "no space left on device"
        return f"disk full ({code}): {what}{target}"
    where = f" (writing {path})" if path is not None else ""
    return f"{type(exc).__name__}: {exc}{where}".replace("\n", " ")


def reserve_space(cell_dir: Path, nbytes: int = RESERVE_BYTES) -> bool:
    """Hold ``nbytes`` of the disk in ``<cell>/.reserve`` (written, not sparse) while the cell
    runs; :func:`release_space` gives it back. Best effort: False if the disk cannot give it."""
    path = Path(cell_dir) / RESERVE
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * nbytes)
        return True
    except OSError:
        release_space(cell_dir)
        return False


def release_space(cell_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (Path(cell_dir) / RESERVE).unlink(missing_ok=True)


@dataclass(frozen=True)
class Progress:
    """What a measuring cell's ``progress.json`` says (written by harness.drive every second,
    read by ``launch status`` and the local launcher's progress bar)."""

    jobs_done: int
    jobs_total: int
    t_s: float | None = None  # seconds since the client's clock started
    client_workers: int | None = None  # client processes (harness.shards)

    def to_json(self) -> dict[str, Any]:
        return {"jobs_done": self.jobs_done, "jobs_total": self.jobs_total, "t_s": self.t_s,
                "state": "running", "client_workers": self.client_workers}

    def describe(self) -> str:
        """``jobs 23/24, 167 s, 2 client workers`` (what is known of it)."""
        parts = [f"jobs {self.jobs_done}/{self.jobs_total}"]
        if self.t_s is not None:
            parts.append(f"{self.t_s:.0f} s")
        if self.client_workers is not None:
            w = self.client_workers
            parts.append(f"{w} client worker{'s' if w != 1 else ''}")
        return ", ".join(parts)


def write_progress(progress: Progress, cell_dir: Path) -> Path:
    """Rewrite the cell's progress.json (every second while it measures). Unlinked and linked
    anew (harness/atomic.py ``gap_ok``): a reader may find none for an instant, which says
    nothing (:func:`read_progress` answers None, the bar waits for the next), and a kill of
    the cell never leaves its temporary."""
    text = json.dumps(progress.to_json(), sort_keys=True) + "\n"
    return write_text(text, Path(cell_dir) / PROGRESS, gap_ok=True)


def read_progress(cell_dir: Path) -> Progress | None:
    """The cell's progress.json, if it is measuring (None: absent or unreadable)."""
    try:
        d = json.loads((cell_dir / PROGRESS).read_text())
        t, w = d.get("t_s"), d.get("client_workers")
        return Progress(int(d["jobs_done"]), int(d["jobs_total"]),
                        None if t is None else float(t), None if w is None else int(w))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
