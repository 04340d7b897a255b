"""Advisory locks on folders: one writer per sweep folder, one per cell folder.

A lock is ``fcntl.flock`` on a file in the folder, held for as long as the writer runs:

- ``<sweep>/.kvbench.lock`` (:data:`SWEEP_LOCK`): the launcher of a local sweep holds it for its
  whole life; a SLURM sweep holds it while it plans and submits (``launch/cli.py``).
- ``<cell>/_kvbench.lock`` (:data:`CELL_LOCK`): the process that runs a cell holds it while it
  runs (``harness.cell.run_cells``: a local job, a SLURM job, ``launch cell``). Its name starts
  with ``_`` so ``archive_previous`` leaves it where it is, and pyarrow datasets skip it.

The file says who holds it: host, pid, since (UTC ISO time), the process' start time and its
command line (JSON). A second writer is refused with :class:`LockHeld`, one line naming the
holder, or waits if asked (``acquire(wait=True)``). The kernel releases a flock when its holder
dies, however it dies; a released lock whose file still names a holder was left by a process
that died holding it, and the next writer takes it over, saying whom it replaces
(:attr:`FolderLock.took_over`). A clean release empties the file first (:meth:`FolderLock.clear`
lets a cell do that before it writes ``DONE``, so nothing in a finished cell changes after
``DONE``); the file itself stays (unlinking a lock file races with a writer that has it open).

The file descriptor is not inherited by child processes (Python opens files non-inheritable and
subprocess closes the others), so a server or a submitit controller never holds a lock after
its parent died.

NFS: on Linux, flock on an NFS mount is emulated with POSIX (fcntl) locks over the whole file,
which go to the server: on NFSv4 the lock holds across hosts (a host that dies holding it
loses it when its lease expires, about 90 s); on NFSv3 it needs the NLM lock manager
(lockd/statd), and a mount with ``nolock`` makes every lock local to its host, so two hosts
could both "hold" one. The holder's host is in the file either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from harness.errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_LOCK = ".kvbench.lock"
CELL_LOCK = "_kvbench.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: what its file says."""

    host: str
    pid: int
    since: str  # UTC ISO time the lock was taken
    command: str
    started_unix: float | None = None  # the process' start time (a pid is reused)

    @classmethod
    def me(cls, command: str | None = None) -> Holder:
        pid = os.getpid()
        try:
            started: float | None = psutil.Process(pid).create_time()
        except (psutil.Error, OSError):
            started = None
        return cls(host=socket.gethostname(), pid=pid,
                   since=datetime.now(UTC).isoformat(timespec="seconds"),
                   command=command or " ".join([os.path.basename(sys.executable), *sys.argv]),
                   started_unix=started)  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(host=str(d["host"]), pid=int(d["pid"]), since=str(d["since"]),
                       command=str(d.get("command") or "?"),
                       started_unix=d.get("started_unix"))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    def describe(self) -> str:
        cmd = self.command if len(self.command) <= 120 else self.command[:117] + "..."
        return f"pid {self.pid} on {self.host} since {self.since} ({cmd})"


class LockHeld(ConfigError):
    """The folder is locked by another writer (a live process); ``holder`` names it."""

    def __init__(self, message: str, path: Path, holder: Holder | None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


def read_holder(lock_file: Path) -> Holder | None:
    """What a lock file says (None: empty, unreadable or absent: nobody recorded)."""
    try:
        text = Path(lock_file).read_text()
    except OSError:
        return None
    return Holder.parse(text) if text.strip() else None


class FolderLock:
    """An exclusive advisory lock on ``folder`` (its file ``folder/name``).

    ``what`` names the folder in messages ("sweep folder", "cell folder"); ``hint`` is added to
    the refusal (how to wait, or how to stop the holder)."""

    def __init__(self, folder: Path, name: str = SWEEP_LOCK, what: str = "folder",
                 hint: str = "", command: str | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self.hint = hint
        self.command = command
        self.took_over: Holder | None = None  # the dead holder this lock replaced, if any
        self._fd: int | None = None
        self._cleared = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, timeout_s: float | None = None, poll_s: float = 0.5,
                on_wait: Callable[[Holder | None], None] | None = None) -> FolderLock:  # fmt: skip
        """Take the lock, or raise :class:`LockHeld` naming its holder. With ``wait``, poll
        until it is free (``on_wait`` is called once with the holder; ``timeout_s``: give up
        then, with LockHeld)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # non-inheritable (PEP 446)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._holder_now()
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise LockHeld(self._refusal(holder), self.path, holder) from None
                if not told and on_wait is not None:
                    on_wait(holder)
                told = True
                time.sleep(poll_s)
                continue
            except BaseException:
                os.close(fd)
                raise
            break
        self._fd = fd
        try:
            left = Holder.parse(os.pread(fd, 65536, 0).decode(errors="replace"))
            me = Holder.me(self.command)
            if left is not None and (left.host, left.pid) != (me.host, me.pid):
                self.took_over = left  # its process died holding the lock (else it is ours)
                log.warning("%s", self.takeover_line())
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.to_text().encode(), 0)
            os.fsync(fd)
            self._cleared = False
        except BaseException:
            self.release()
            raise
        return self

    def _holder_now(self) -> Holder | None:
        """The holder's record; read again briefly if empty (it may be writing it now)."""
        for _ in range(5):
            h = read_holder(self.path)
            if h is not None:
                return h
            time.sleep(0.05)
        return None

    def _refusal(self, holder: Holder | None) -> str:
        who = holder.describe() if holder else "another process (it has not recorded who yet)"
        return f"{self.what} {self.folder} is in use by {who}" + (f"; {self.hint}" if self.hint
                                                                    else "")  # fmt: skip

    def takeover_line(self) -> str:
        assert self.took_over is not None
        return (f"took over the lock of {self.what} {self.folder}: it was left by "
                f"{self.took_over.describe()}, which died without releasing it")  # fmt: skip

    def clear(self) -> None:
        """Mark the lock free in its file (empty it) while still holding it: the last write to
        the lock file, so a cell can do it before ``DONE`` and never touch the file after."""
        if self._fd is not None and not self._cleared:
            os.ftruncate(self._fd, 0)
            self._cleared = True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                if not self._cleared:
                    os.ftruncate(fd, 0)
                self._cleared = True
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
