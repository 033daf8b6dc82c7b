"""Files that hold secrets or the record (state, audit log, backups): 0600 in 0700 directories.

Whatever the process umask, these are created private, and ones an older version left readable are
tightened when opened (only files and directories this user owns, never a shared parent like /tmp)."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
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
    """Create `path` 0600 if missing (or tighten it), in a private directory. What is there must be what
    `open_private` would use (see `refusal`)."""
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
    regular file), and only a regular file is used. Where someone else could have put what is there,
    never through a link, and only a file of a user allowed there (see `refusal`)."""
    private_dir(path.parent)
    trust = _trust(path.parent)
    nofollow = 0 if trust.links else os.O_NOFOLLOW
    fd = os.open(path, flags | os.O_CREAT | os.O_NONBLOCK | nofollow, _FILE_MODE)
    try:
        info = os.fstat(fd)
        if why := _refused(info, trust):
            raise PermissionError(errno.EPERM, why, str(path))
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~_FILE_MODE:
            os.fchmod(fd, _FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def refusal(path: Path) -> str | None:
    """Why `open_private` would refuse what is at `path` now, or None (also None when nothing is there).

    Who could have put it there decides:
    - a directory only this user or root can write to: what is there is taken as it is (a link made on
      purpose, an owner NFS maps);
    - another user's directory no one else can write to (root running `sudo runbook status` on the
      service user's /var/lib/runbook): that user's files and ours, never a link (the user could point
      it at a file only root may write);
    - a directory others can write to (group or world writable, or sticky like /tmp): only our own
      files, never a link: anyone there could have planted it, to have our writes clobber its target
      or to read and forge what is recorded."""
    trust = _trust(path.parent)
    try:
        info = path.stat() if trust.links else path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot look at it: {exc.strerror or exc}"
    return _refused(info, trust)


@dataclass(frozen=True)
class _Trust:
    links: bool  # links there are followed
    owners: frozenset[int] | None  # the users whose files are used (None: anyone's)


def _trust(directory: Path) -> _Trust:
    me = os.geteuid()
    try:
        info = directory.stat()
    except OSError:
        return _Trust(False, frozenset({me}))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISVTX):
        return _Trust(False, frozenset({me}))
    if info.st_uid in (me, 0):
        return _Trust(True, None)
    return _Trust(False, frozenset({me, info.st_uid}))


def _refused(info: os.stat_result, trust: _Trust) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "a link, where someone else could have made it: refused"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, a device?): refused"
    if trust.owners is not None and info.st_uid not in trust.owners:
        return f"owned by uid {info.st_uid}, where someone else could have put it: refused"
    return None
