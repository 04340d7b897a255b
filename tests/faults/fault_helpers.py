"""Helpers of the fault tests (docs/reliability.md): every process a sweep started, found by a
mark in its environment; files half written; a small disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, wait_for  # noqa: F401 - re-exported

MARK = "KVBENCH_FAULT_MARK"  # inherited by everything a launcher starts (submitit, cell, vLLM)


def new_mark() -> str:
    return uuid.uuid4().hex


def launch(args: list[str], mark: str, log: Path) -> subprocess.Popen:
    """``python -m launch ARGS`` in the background, its output to ``log``, its environment
    (and so every descendant's, the vLLM server's engine core included) marked."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", MARK: mark}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


_SESSIONS: dict[str, set[int]] = {}  # mark -> sessions its processes were seen in


def _live() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["pid", "status", "cwd"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid()]  # fmt: skip


def carrying(mark: str, procs: list[psutil.Process] | None = None) -> list[psutil.Process]:
    """Live processes whose environment (/proc/<pid>/environ) holds ``mark``."""
    needle = f"{MARK}={mark}".encode()
    return [p for p in (_live() if procs is None else procs)
            if needle in _environ(p.pid).split(b"\0")]  # fmt: skip


def marked(mark: str, folder: Path | None = None) -> list[psutil.Process]:
    """Live (not zombie) processes of the launcher that carries ``mark``: those whose
    environment holds the mark, whatever their parent, session or process group; any process
    in a session where one of those was ever seen by this function (but the test's own: the
    launcher runs in it); and with ``folder``, any working inside it. The mark alone misses
    vLLM's engine core and workers: they rename themselves (setproctitle), which overwrites
    what /proc/<pid>/environ shows; they stay in the API server's session."""
    sessions = _SESSIONS.setdefault(mark, set())
    procs = _live()
    found = {p.pid: p for p in carrying(mark, procs)}
    for pid in found:
        with contextlib.suppress(OSError):
            sessions.add(os.getsid(pid))
    sessions.discard(os.getsid(0))
    root = str(Path(folder).resolve()) if folder is not None else None
    for p in procs:
        if p.pid in found:
            continue
        with contextlib.suppress(OSError):
            if os.getsid(p.pid) in sessions or (root and (p.info["cwd"] or "").startswith(root)):
                found[p.pid] = p
    return list(found.values())


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append(f"{p.pid} (pgid {os.getpgid(p.pid)}, sid {os.getsid(p.pid)}) "
                       f"{' '.join(p.cmdline())[:140]}")  # fmt: skip
    return out


def server_group(mark: str) -> list[psutil.Process]:
    """The vLLM server of the sweep and all its descendants (the engine core)."""
    servers = [p for p in marked(mark)
               if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())]  # fmt: skip
    out = list(servers)
    for s in servers:
        with contextlib.suppress(psutil.Error):
            out += s.children(recursive=True)
    return out


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            os.kill(p.pid, sig)


def api_key(server: psutil.Process) -> str:
    """The server's per-cell key, from its environment (root reads any process')."""
    for kv in _environ(server.pid).split(b"\0"):
        if kv.startswith(b"VLLM_API_KEY="):
            return kv.split(b"=", 1)[1].decode()
    raise AssertionError("the server has no VLLM_API_KEY")


def kill_everything(mark: str, folder: Path | None = None, passes: int = 5) -> list[str]:
    """SIGKILL every process of the sweep (:func:`marked`), again until none is left (a
    process could start between the scan and the kill); returns what was killed."""
    killed: list[str] = []
    for _ in range(passes):
        procs = marked(mark, folder)
        if not procs:
            break
        killed += describe(procs)
        signal_all(procs, signal.SIGKILL)
        time.sleep(0.3)
    return killed


# --- files ------------------------------------------------------------------------------------


def digest(cell_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under a cell folder (byte-identical check)."""
    return {str(p.relative_to(cell_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cell_dir.rglob("*")) if p.is_file()}  # fmt: skip


def half_written(folder: Path) -> list[str]:
    """Record files that are not whole: leftover temporaries (``.<name>.tmp``), parquet that
    does not read, JSON that does not parse. ``_submitit`` (submitit's own files) is skipped
    but for temporaries of ours."""
    bad = [f"temporary left: {p}" for p in folder.rglob(".*.tmp")]
    for p in folder.rglob("*"):
        if not p.is_file() or "_submitit" in p.parts:
            continue
        try:
            if p.suffix == ".parquet":
                pq.read_table(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            bad.append(f"unreadable: {p} ({type(e).__name__}: {e})")
    return bad


# --- a small disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where`` (root only). Skipped where mounting is not
    permitted, except under KVBENCH_REQUIRE_SLURM=1 (CI runs as root): there it fails."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(where)], capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        why = (f"cannot mount a {size} tmpfs to fill (needs root): "
               f"{(r.stderr or r.stdout).strip() or f'mount exited {r.returncode}'}")
        if os.environ.get("KVBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, name: str = "filler") -> Path:
    """Write ``disk/name`` until the disk is full; returns it (delete it to free the space)."""
    path = disk / name
    block = b"\1" * (1 << 16)
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    f.write(block[:size])
                except OSError:
                    break
    return path
