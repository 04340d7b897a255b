"""The processes of a local sweep on this host: the launcher's record, and liveness checks.

A local sweep runs in the foreground process ``python -m launch sweep`` (the launcher); each
server group is a submitit local job whose id is its controller's pid. The launcher records
itself in ``<sweep>/_submitit/launcher.json`` (pid, host, process start time, command line)
while it runs, so ``status`` can tell a live local cell from one whose process is gone and
``cancel`` can stop it from another terminal. A pid is trusted only on the host that wrote it,
while the process with that pid started when the record says and runs the expected program
(pids are reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness import records

LAUNCHER = "launcher.json"
CONTROLLER_MODULE = "submitit.local._local"  # submitit's local job controller


def launcher_file(sweep_path: Path) -> Path:
    return Path(sweep_path) / "_submitit" / LAUNCHER


def host() -> str:
    return socket.gethostname()


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def cmdline(pid: int) -> list[str]:
    """/proc/<pid>/cmdline as a list ([] if the process is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_launch_cmdline(args: list[str]) -> bool:
    """``python -m launch ...`` (or launch/__main__.py run as a script)."""
    if any(a == "-m" and b == "launch" for a, b in zip(args, args[1:], strict=False)):
        return True
    return any(a.endswith(("launch/__main__.py", "launch/cli.py")) for a in args[:3])


def is_controller_cmdline(args: list[str], sweep_path: Path | None = None) -> bool:
    """submitit's local controller (``python -m submitit.local._local <folder>``), of this
    sweep's ``_submitit`` folder if ``sweep_path`` is given."""
    if CONTROLLER_MODULE not in args:
        return False
    if sweep_path is None:
        return True
    folder = str(Path(sweep_path).resolve() / "_submitit")
    return any(a.rstrip("/") == folder for a in args)


@dataclass(frozen=True)
class Launcher:
    pid: int
    host: str
    started_unix: float  # the process' start time (psutil), to tell a reused pid
    argv: list[str]
    path: Path

    @property
    def here(self) -> bool:
        return self.host == host()

    def alive(self) -> bool:
        """The recorded process still runs (on this host, same start time, a launch command)."""
        if not self.here:
            return False
        t = _create_time(self.pid)
        return (
            t is not None
            and abs(t - self.started_unix) < 1.0
            and is_launch_cmdline(cmdline(self.pid))
        )


def read_launcher(sweep_path: Path) -> Launcher | None:
    f = launcher_file(sweep_path)
    try:
        d = json.loads(f.read_text())
        return Launcher(int(d["pid"]), str(d["host"]), float(d["started_unix"]),
                        list(d.get("argv") or []), f)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def launcher_record(sweep_path: Path):
    """Record this process as the sweep's launcher while the block runs."""
    pid = os.getpid()
    started = _create_time(pid) or time.time()
    f = launcher_file(sweep_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    records.write_json({"pid": pid, "host": host(), "started_unix": started,
                        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                        "argv": [sys.executable, *sys.argv]}, f)  # fmt: skip
    try:
        yield
    finally:
        mine = read_launcher(sweep_path)
        if mine is not None and mine.pid == pid and mine.host == host():
            f.unlink(missing_ok=True)


def pid_alive(pid: int, started_unix: float | None = None) -> bool:
    """Process ``pid`` runs on this host (and, if ``started_unix`` is given, it is the process
    that started then, not a later one given the same pid)."""
    t = _create_time(pid)
    if t is None or _zombie(pid):
        return False
    return started_unix is None or abs(t - float(started_unix)) < 1.0


def controller_alive(job_id: str, sweep_path: Path, rec_host: str | None) -> bool:
    """A local submitit job (its id is its controller's pid) still runs on this host."""
    if rec_host is not None and rec_host != host():
        return False
    try:
        pid = int(job_id)
    except ValueError:
        return False
    return bool(controller_pids(pid, sweep_path))


def controller_pids(pid: int, sweep_path: Path) -> list[int]:
    """The controller processes of local job ``pid``: the pid itself, or (when submitit ran the
    controller through a shell for ``local_setup``) its children that are controllers."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children()]
    except (psutil.Error, OSError):
        return []
    return [p.pid for p in procs if is_controller_cmdline(cmdline(p.pid), sweep_path)]


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until the processes exit; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if psutil.pid_exists(p) and not _zombie(p)]
        if left:
            time.sleep(0.3)
    return left


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return True
