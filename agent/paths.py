"""Where the agent keeps its files, worked out without importing the settings' validation (pydantic, yaml):
`runbook run` uses this to find a local daemon before it loads anything heavy."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "DAEMON_LOCK",
    "DAEMON_SOCKET",
    "DAEMON_TOKEN",
    "ENV_NAMES",
    "default_runbooks_dirs",
    "default_state_dir",
    "env_digest",
    "files_digest",
]

DAEMON_LOCK = "daemon.lock"  # held by the daemon that has the socket
DAEMON_SOCKET = "daemon.sock"  # in the state directory (0700): only its owner can connect
DAEMON_TOKEN = "daemon.token"  # noqa: S105 - a file name; the file (0600) proves the caller can read the state dir


PACKAGED_RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


def default_runbooks_dirs(configured: str | None) -> list[Path]:
    """The runbooks a command reads when not given any: the configured directory, else ./runbooks, else
    the ones shipped with the package."""
    if configured:
        return [Path(configured)]
    local = Path("runbooks")
    return [local if local.is_dir() else PACKAGED_RUNBOOKS]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runbook"


# What the settings and the runbooks' templates read from the environment by default. A run handed to
# the local daemon must be the run this process would do: the same values, or the daemon declines.
ENV_NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "DOCKER_HOST",
    "RUNBOOK_CONFIG",
    "RUNBOOK_DIR",
    "RUNBOOK_AUDIT_LOG",
    "RUNBOOK_STATE_DIR",
    "RUNBOOK_COMPOSE_PROJECT",
    "RUNBOOK_POLICY",
    "RUNBOOK_ENV",
    "RUNBOOK_BACKUP_DIR",
    "XDG_STATE_HOME",
    "HOME",
    "APP_URL",
)


def env_digest(env: Mapping[str, str], names: Iterable[str]) -> str:
    """A digest of the named variables' values (unset and empty alike, as the settings read them): the
    values themselves (database passwords) never leave the process."""
    import hashlib  # here, not at the top: `runbook --help` has no use for it

    hasher = hashlib.sha256()
    for name in sorted(set(names)):
        hasher.update(name.encode() + b"=" + (env.get(name) or "").encode("utf-8", "surrogateescape") + b"\0")
    return hasher.hexdigest()


def files_digest(paths: Iterable[Path | None]) -> str:
    """A digest of the files' contents (config and policy files): whether they changed since."""
    import hashlib

    hasher = hashlib.sha256()
    for path in paths:
        data = b"\0none"
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError:
                data = b"\0unreadable"
        hasher.update(hashlib.sha256(data).digest())
    return hasher.hexdigest()
