"""The daemon's local socket (agent.local_runs.LocalSocket): made safely, never taken from another daemon,
never removed from under a later one, and never a reason for the daemon not to start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.local_runs import LocalSocket, LocalSocketUnavailable


def bind(state: Path) -> tuple[LocalSocket, object]:
    from agent.paths import files_digest, secret_files

    return LocalSocket.bind(
        state, [state], None, None, loaded=(files_digest([None, *secret_files()]), files_digest([None]))
    )


def test_the_socket_and_token_are_private_and_a_second_daemon_does_not_take_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    local, listener = bind(state)
    try:
        assert stat.S_IMODE((state / "daemon.sock").stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "daemon.token").stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        with pytest.raises(LocalSocketUnavailable, match="another daemon"):
            bind(state)
        assert (state / "daemon.token").read_text().strip() == local.token  # still the first one's
    finally:
        listener.close()  # type: ignore[attr-defined]
        local.close()


def test_a_killed_daemons_files_are_taken_over_and_a_live_ones_never(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old, old_listener = bind(state)
    old_listener.close()  # type: ignore[attr-defined]  # not answering any more, but still alive: its lock
    with pytest.raises(LocalSocketUnavailable, match="another daemon has"):
        bind(state)
    os.close(old.lock)  # killed: the kernel lets go of its lock; its socket and token are left behind
    new, new_listener = bind(state)  # takes the stale files over
    try:
        assert (state / "daemon.token").read_text().strip() == new.token
    finally:
        new_listener.close()  # type: ignore[attr-defined]
        new.close()
    assert not (state / "daemon.sock").exists() and not (state / "daemon.token").exists()


def test_a_socket_that_cannot_be_made_is_an_error_the_daemon_survives(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)  # past what a Unix socket path may be
    with pytest.raises(LocalSocketUnavailable):
        bind(deep)


def test_a_relative_path_from_any_variable_or_the_config_file_binds_the_working_directory() -> None:
    from agent.config import Settings
    from agent.local_runs import _relative_paths

    absolute = Settings(state_dir=Path("/var/lib/runbook"))
    assert not _relative_paths({"RUNBOOK_STATE_DIR": "/var/lib/runbook"}, absolute)
    # Every variable that sets a path (the RUNBOOK_<SETTING> names too, not only the legacy ones)...
    for name in ("RUNBOOK_RUNBOOKS_DIR", "RUNBOOK_POLICY_FILE", "RUNBOOK_BACKUP_DIR", "RUNBOOK_CONFIG"):
        assert _relative_paths({name: "here/there"}, absolute), name
    # ...and a path the YAML config file gave relative (resolved in the daemon's directory).
    assert _relative_paths({}, Settings(state_dir=Path("/var/lib/runbook"), audit_log=Path("audit.jsonl")))


def test_no_socket_when_a_secret_changed_between_the_daemon_reading_it_and_binding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket's digest must be of what the daemon read: a secret rotated while it started would let a
    command holding the new secret hand its run to a daemon holding the old one."""
    from agent.paths import files_digest, run_files_digest, secret_files

    secret = tmp_path / "db-url"
    secret.write_text("postgresql://app:old@db/app")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    policy = tmp_path / "policy.yaml"
    policy.write_text("environments: {}\n")
    before = (files_digest([None, *secret_files()]), files_digest([policy]))
    state = tmp_path / "state"
    local, listener = LocalSocket.bind(state, [state], None, policy, loaded=before)  # unchanged: bound
    listener.close()  # type: ignore[attr-defined]
    local.close()
    assert local.files_digest == run_files_digest(None, policy)  # what a command with these files sends
    secret.write_text("postgresql://app:new@db/app")  # rotated after the daemon read it
    with pytest.raises(LocalSocketUnavailable, match="changed while the daemon started"):
        LocalSocket.bind(state, [state], None, policy, loaded=before)


def test_a_secret_from_a_pipe_leaves_the_socket_bound_but_matching_no_command(tmp_path: Path) -> None:
    """A pipe's digest is never the same twice: not a rotation, so the socket is made, and no command's
    digest matches it (each then reads its own secret), as before the daemon compared anything."""
    from agent.paths import files_digest, run_files_digest

    fifo = tmp_path / "db-url"
    os.mkfifo(fifo)
    env = {"DATABASE_URL_FILE": str(fifo)}
    os.environ.update(env)
    try:
        from agent.paths import secret_files

        loaded = (files_digest([None, *secret_files()]), files_digest([None]))
        state = tmp_path / "state"
        local, listener = LocalSocket.bind(state, [state], None, None, loaded=loaded)
        try:
            assert local.files_digest != run_files_digest(None, None)
        finally:
            listener.close()  # type: ignore[attr-defined]
            local.close()
    finally:
        del os.environ["DATABASE_URL_FILE"]
