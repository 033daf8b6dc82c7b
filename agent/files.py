"""Files that hold secrets or the record (state, audit log, backups): 0600 in 0700 directories.

Whatever the process umask, these are created private, and ones an older version left readable are
tightened when opened (only files and directories this user owns, never a shared parent like /tmp)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["open_private", "private_dir", "private_file"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> None:
    info = path.lstat()
    # Never through a symlink (chmod would follow it), never a shared directory (sticky, like /tmp),
    # never someone else's.
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Make `path` (and missing parents) 0700. An existing directory is tightened only when asked
    (the state directory is ours; the directory an audit log path names may be a shared one)."""
    if path.is_dir():
        if tighten:
            _tighten(path, _DIR_MODE)
        return path
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=_DIR_MODE, exist_ok=True)
        directory.chmod(_DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """Create `path` 0600 if missing (or tighten it), in a private directory. What is there must be a
    regular file of this user: not a link (a library opening it by name would follow it), not a file
    someone else planted (they could read it, or forge what it records)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
    except FileExistsError:
        # Never opened (and closed) when it exists: closing any descriptor of a file drops every POSIX
        # lock this process holds on it, and SQLite's locks on the state database are those.
        pass
    else:
        os.close(fd)
    _refuse_unless_ours(path, path.lstat())
    _tighten(path, _FILE_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open with mode 0600 for whatever it creates (O_CREAT honours the mode, less the umask: 0600
    can only get stricter). Never through a symlink, and only a regular file of this user: a link or a
    file planted by someone who can write to the directory is refused (OSError), not written through.
    O_NONBLOCK so that a FIFO planted there cannot hang the open; it changes nothing for a regular file."""
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, _FILE_MODE)
    try:
        info = os.fstat(fd)
        _refuse_unless_ours(path, info)
        if stat.S_IMODE(info.st_mode) & ~_FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_unless_ours(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise PermissionError(errno.EPERM, "not a regular file (a link, a pipe, a device?): refused", str(path))
    if info.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, f"owned by uid {info.st_uid}, not this user: refused", str(path))
