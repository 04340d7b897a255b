"""Replacing a file so that neither a reader nor a kill ever finds half of it: one function,
standard library only (vLLM's engine process imports it, through harness/plugins/stats.py).

Where the file system has unnamed files (Linux ``O_TMPFILE``: ext4, xfs, btrfs, tmpfs), the new
content is written into a file without a name, which gets its name only once complete:

- a file that does not exist yet (every record but the manifest is written once) is linked to
  its name in one system call: no moment exists where a SIGKILL leaves anything but nothing or
  the whole file;
- a file that exists (the manifest, a policy's stats snapshot five times a second) is linked to
  its temporary name ``.<name>.tmp`` and renamed over the old one: a SIGKILL can leave the
  temporary only between those two calls, with no I/O between them, not during the write;
- a file whose brief absence says nothing (``progress.json``, every second: ``gap_ok``) is
  unlinked and linked anew: a SIGKILL never leaves a temporary, at worst no file.

Elsewhere (NFS, a kernel without ``O_TMPFILE``) the content is written to ``.<name>.tmp`` and
renamed, as before: a kill during the write leaves that hidden temporary, which every reader
ignores and the cell's next attempt moves away (harness/cell.archive_previous). A write that
fails (a full disk, an error in the writer) leaves no temporary and the old file whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # 0: not Linux
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS}  # FS says no
_PROC_FD = Path("/proc/self/fd")  # linking an unnamed file needs it (or CAP_DAC_READ_SEARCH)


def tmp_path(path: Path) -> Path:
    """The hidden temporary ``.<name>.tmp`` beside ``path``."""
    return path.with_name(f".{path.name}.tmp")


def current_umask() -> int:
    """This process' umask, read without changing it (Linux's /proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode(executable: bool = False) -> int:
    """The mode of a file kvbench writes: a new file's under the umask (0o666, or 0o777 for
    a script, less the umask), never world-writable."""
    return (0o777 if executable else 0o666) & ~current_umask() & ~0o002


def replace(path: Path, write: Callable[[BinaryIO], object], mode: int | None = None,
            tmp: Path | None = None, gap_ok: bool = False) -> Path:  # fmt: skip
    """Write ``path`` anew with ``write(file)`` and give it ``mode`` (default
    :func:`file_mode`), in one step for readers.

    ``tmp`` is the temporary name (default ``.<name>.tmp``; a writer that shares ``path`` with
    other processes passes one of its own). A stale temporary of that name, left by a killed
    writer, is removed. ``gap_ok``: a reader may find no file for an instant (the old one is
    unlinked, then the new one linked), and a kill leaves no temporary at any moment, at worst
    no file: for a file rewritten every second whose absence says nothing (``progress.json``).
    Raises what writing or naming raised, leaving no temporary."""
    path = Path(path)
    tmp = tmp or tmp_path(path)
    mode = file_mode() if mode is None else mode
    fd = _unnamed(path.parent, mode)
    if fd is None:
        return _named(path, write, mode, tmp)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fchmod(f.fileno(), mode)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a killed writer's, or a name the link below needs
        if gap_ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            _link(f.fileno(), path)  # absent: named whole, at once
            return path
        except FileExistsError:
            pass
        _link(f.fileno(), tmp)
        _move(tmp, path)
    return path


def _move(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path``; if that fails, remove ``tmp`` and raise."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _unnamed(folder: Path, mode: int) -> int | None:
    """A writable unnamed file in ``folder``, or None where the file system has none."""
    if not O_TMPFILE or not _PROC_FD.is_dir():
        return None
    try:
        return os.open(folder, O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in _NO_UNNAMED:
            return None
        raise


def _link(fd: int, name: Path) -> None:
    """Give the unnamed file ``fd`` the name ``name``. linkat(2) must follow /proc's link to
    the file (AT_SYMLINK_FOLLOW); Python's os.link asks for that only when given a folder's
    descriptor (else it calls link(2), which would link /proc's symlink itself: EXDEV)."""
    folder = os.open(name.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(_PROC_FD / str(fd), name.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _named(path: Path, write: Callable[[BinaryIO], object], mode: int, tmp: Path) -> Path:
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _move(tmp, path)
    return path
