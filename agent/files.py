"""Files that hold secrets or the record (state, audit log, backups): 0600 in 0700 directories.

Whatever the process umask, these are created private, and ones an older version left readable are
tightened when opened (only files and directories this user owns, never a shared parent like /tmp)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["open_private", "private_dir", "private_file", "refusal"]

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
    """Create `path` 0600 if missing (or tighten it), in a private directory. In a directory others can
    write to, what is there must be a regular file of this user (see `refusal`)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
    except FileExistsError:
        # Never opened (and closed) when it exists: closing any descriptor of a file drops every POSIX
        # lock this process holds on it, and SQLite's locks on the state database are those.
        pass
    else:
        os.close(fd)
    if why := refusal(path):
        raise PermissionError(errno.EPERM, why, str(path))
    _tighten(path, _FILE_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open with mode 0600 for whatever it creates (O_CREAT honours the mode, less the umask: 0600
    can only get stricter). O_NONBLOCK so that a FIFO cannot hang the open (it changes nothing for a
    regular file), and only a regular file is used. In a directory others can write to, never through a
    link and only a file of this user (see `refusal`)."""
    private_dir(path.parent)
    shared = _shared(path.parent)
    fd = os.open(path, flags | os.O_CREAT | os.O_NONBLOCK | (os.O_NOFOLLOW if shared else 0), _FILE_MODE)
    try:
        info = os.fstat(fd)
        if why := _refused(info, shared):
            raise PermissionError(errno.EPERM, why, str(path))
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~_FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def refusal(path: Path) -> str | None:
    """Why `open_private` would refuse what is at `path` now, or None (also None when nothing is there).

    Where only this user (or root) can write, what is there is taken as it is: a link someone made on
    purpose, a file of the service's user read by root (`sudo runbook status`), an owner mapped by NFS.
    Where others can write (group or world writable, sticky like /tmp, or someone else's directory),
    they could have put it there: a link, whose target every write would clobber, or their own file,
    which they could read and forge, is refused."""
    shared = _shared(path.parent)
    try:
        info = path.lstat() if shared else path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot look at it: {exc.strerror or exc}"
    return _refused(info, shared)


def _refused(info: os.stat_result, shared: bool) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "a link, in a directory others can write to: refused"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, a device?): refused"
    if shared and info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, in a directory others can write to: refused"
    return None


def _shared(directory: Path) -> bool:
    try:
        info = directory.stat()
    except OSError:
        return True
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISVTX)
    return bool(others_write) or info.st_uid not in (os.geteuid(), 0)
