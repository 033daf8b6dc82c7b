"""Files that hold secrets or the record: created private, and never written through something another
user planted where they go (a link, their own file, a pipe)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.exceptions import AuditError
from agent.files import open_private, private_file
from agent.redaction import Redactor

NOBODY = 65534


def test_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        fd = open_private(tmp_path / "new" / "file", os.O_WRONLY)
        os.close(fd)
        made = private_file(tmp_path / "other" / "db")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "file").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_a_planted_link_is_refused_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "audit.jsonl.head.tmp"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        open_private(link, os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(PermissionError):
        private_file(link)
    assert victim.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's takes root")
def test_a_file_another_user_planted_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "audit.jsonl"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match="not this user"):
        open_private(planted, os.O_RDWR | os.O_APPEND)
    with pytest.raises(PermissionError, match="not this user"):
        private_file(planted)
    # The audit log fails closed on it: nothing is recorded where someone else could read or forge it.
    with pytest.raises(AuditError, match="not this user"):
        AuditLog(planted, Redactor()).record("x")


def test_a_planted_pipe_is_refused_without_hanging(tmp_path: Path) -> None:
    pipe = tmp_path / "state.sqlite3"
    os.mkfifo(pipe, 0o600)
    with pytest.raises(OSError):  # no reader: refused by the open itself (ENXIO), not waited on
        open_private(pipe, os.O_WRONLY)
    with pytest.raises(PermissionError, match="not a regular file"):
        open_private(pipe, os.O_RDWR | os.O_APPEND)
