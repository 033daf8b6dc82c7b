"""Files that hold secrets or the record: created private, and never written through something another
user planted where they go (a link, their own file, a pipe) in a directory others can write to."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.audit import AuditLog, AuditSink
from agent.exceptions import AuditError
from agent.files import open_private, private_file
from agent.redaction import Redactor

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's takes root")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A directory others can write to (group-writable, or like /tmp)."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


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


def test_a_link_planted_where_others_write_is_refused_not_written_through(shared: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = shared / "audit.jsonl.head.tmp"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        open_private(link, os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(PermissionError, match="a link"):
        private_file(link)
    assert victim.read_text() == "keep me"
    # Readiness says so too: the log is not ready to take records.
    assert "a link" in (AuditSink(shared / "audit.jsonl").problem() or "")


@as_root
def test_a_file_another_user_planted_where_others_write_is_refused(shared: Path) -> None:
    planted = shared / "audit.jsonl"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match="owned by uid"):
        open_private(planted, os.O_RDWR | os.O_APPEND)
    with pytest.raises(PermissionError, match="owned by uid"):
        private_file(planted)
    with pytest.raises(AuditError, match="owned by uid"):  # the log fails closed on it
        AuditLog(planted, Redactor()).record("x")
    assert "owned by uid" in (AuditSink(planted).problem() or "")


@as_root
def test_in_a_directory_only_we_write_to_what_is_there_is_used(tmp_path: Path) -> None:
    # Root reading the service user's state (sudo runbook status), an owner NFS maps, a link on purpose.
    theirs = tmp_path / "audit.jsonl"
    theirs.write_text("")
    os.chown(theirs, NOBODY, NOBODY)
    os.close(open_private(theirs, os.O_RDWR | os.O_APPEND))
    elsewhere = tmp_path / "disk" / "audit.jsonl"
    elsewhere.parent.mkdir()
    (tmp_path / "linked.jsonl").symlink_to(elsewhere)
    AuditLog(tmp_path / "linked.jsonl", Redactor()).record("x")
    assert elsewhere.read_text().count("\n") == 1


def test_a_pipe_is_refused_without_hanging(tmp_path: Path) -> None:
    pipe = tmp_path / "state.sqlite3"
    os.mkfifo(pipe, 0o600)
    with pytest.raises(OSError):  # no reader: refused by the open itself (ENXIO), not waited on
        open_private(pipe, os.O_WRONLY)
    with pytest.raises(PermissionError, match="not a regular file"):
        open_private(pipe, os.O_RDWR | os.O_APPEND)


@as_root
def test_root_in_the_service_users_directory_uses_its_files_never_its_links(tmp_path: Path) -> None:
    # sudo runbook status on /var/lib/runbook (0700, the service user's): its state is used; a link the
    # service user made there is not followed (it could point at a file only root may write).
    service = tmp_path / "var-lib-runbook"
    service.mkdir(mode=0o700)
    state = service / "state.sqlite3"
    state.write_text("")
    for made in (service, state):
        os.chown(made, NOBODY, NOBODY)
    private_file(state)
    os.close(open_private(state, os.O_RDWR))
    victim = tmp_path / "only-root-writes-here"
    victim.write_text("keep me")
    (service / "audit.jsonl").symlink_to(victim)
    os.lchown(service / "audit.jsonl", NOBODY, NOBODY)
    with pytest.raises(OSError):
        open_private(service / "audit.jsonl", os.O_RDWR | os.O_APPEND)
    assert victim.read_text() == "keep me"
    # A third user's file there is not the service user's either.
    third = service / "planted"
    third.write_text("")
    os.chown(third, NOBODY - 1, NOBODY - 1)
    with pytest.raises(PermissionError, match="owned by uid"):
        private_file(third)
