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
    "DOCKER_SECRETS",
    "ENV_NAMES",
    "SECRET_SETTINGS",
    "SETTING_VARIABLES",
    "default_runbooks_dirs",
    "default_state_dir",
    "env_digest",
    "files_digest",
    "run_files_digest",
    "secret_files",
    "setting_from_env",
    "ssh_files",
    "tls_files",
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


# Each setting's environment variables, the strongest first: RUNBOOK_<SETTING> for every one, and the
# names people already export (DATABASE_URL, RUNBOOK_DIR...). agent.config reads them; here (without
# pydantic) so that `runbook run` can find its state directory, and compare the environment with a
# local daemon's, before loading anything heavy.
SETTING_VARIABLES: dict[str, tuple[str, ...]] = {
    "database_url": ("RUNBOOK_DATABASE_URL", "DATABASE_URL"),
    "redis_url": ("RUNBOOK_REDIS_URL", "REDIS_URL"),
    "docker_host": ("RUNBOOK_DOCKER_HOST", "DOCKER_HOST"),
    "docker_tls_verify": ("RUNBOOK_DOCKER_TLS_VERIFY", "DOCKER_TLS_VERIFY"),
    "docker_cert_path": ("RUNBOOK_DOCKER_CERT_PATH", "DOCKER_CERT_PATH"),
    "docker_ssh_identity": ("RUNBOOK_DOCKER_SSH_IDENTITY",),
    "docker_ssh_known_hosts": ("RUNBOOK_DOCKER_SSH_KNOWN_HOSTS",),
    "docker_ssh_socket": ("RUNBOOK_DOCKER_SSH_SOCKET",),
    "compose_project": ("RUNBOOK_COMPOSE_PROJECT",),
    "runbooks_dir": ("RUNBOOK_RUNBOOKS_DIR", "RUNBOOK_DIR"),
    "state_dir": ("RUNBOOK_STATE_DIR",),
    "audit_log": ("RUNBOOK_AUDIT_LOG",),
    "connect_timeout": ("RUNBOOK_CONNECT_TIMEOUT",),
    "read_timeout": ("RUNBOOK_READ_TIMEOUT",),
    "max_parallel_checks": ("RUNBOOK_MAX_PARALLEL_CHECKS",),
    "policy_file": ("RUNBOOK_POLICY_FILE", "RUNBOOK_POLICY"),
    "environment": ("RUNBOOK_ENVIRONMENT", "RUNBOOK_ENV"),
    "max_targets_per_run": ("RUNBOOK_MAX_TARGETS_PER_RUN",),
    "default_limit": ("RUNBOOK_DEFAULT_LIMIT",),
    "limit_window": ("RUNBOOK_LIMIT_WINDOW",),
    "default_cooldown": ("RUNBOOK_DEFAULT_COOLDOWN",),
    "lock_ttl": ("RUNBOOK_LOCK_TTL",),
    "apply_timeout": ("RUNBOOK_APPLY_TIMEOUT",),
    "backup_dir": ("RUNBOOK_BACKUP_DIR",),
    "template_env": ("RUNBOOK_TEMPLATE_ENV",),
    "alert_retention": ("RUNBOOK_ALERT_RETENTION",),
    "run_retention": ("RUNBOOK_RUN_RETENTION",),
    "alertmanager_url": ("RUNBOOK_ALERTMANAGER_URL",),
    "state_url": ("RUNBOOK_STATE_URL",),
    "engines": ("RUNBOOK_ENGINES",),
    "agent_dead_after": ("RUNBOOK_AGENT_DEAD_AFTER",),
}
# Settings that hold passwords: also read from a file (NAME_FILE, a Docker secret, a systemd credential).
# (alertmanager_url: it may carry basic-auth credentials; state_url: the shared state's password.)
SECRET_SETTINGS = frozenset({"database_url", "redis_url", "alertmanager_url", "state_url"})
DOCKER_SECRETS = Path("/run/secrets")

# What the settings and the runbooks' templates read from the environment by default. A run handed to
# the local daemon must be the run this process would do: the same values, or the daemon declines.
ENV_NAMES = (
    *(name for names in SETTING_VARIABLES.values() for name in names),
    *(f"{name}_FILE" for setting in sorted(SECRET_SETTINGS) for name in SETTING_VARIABLES[setting]),
    "RUNBOOK_CONFIG",
    "CREDENTIALS_DIRECTORY",
    "XDG_STATE_HOME",
    "HOME",
    "SSH_AUTH_SOCK",  # an ssh:// engine's login: another agent socket may hold another key
    "APP_URL",
)


def setting_from_env(setting: str, env: Mapping[str, str] | None = None) -> str | None:
    """A setting's value as the environment gives it (its strongest variable), or None: the cheap read,
    for when no config file is in play."""
    env = os.environ if env is None else env
    return next((env[name] for name in SETTING_VARIABLES[setting] if env.get(name)), None)


def secret_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files secret settings may be read from (agent.config): their contents are compared, by
    digest, before a run is handed to the local daemon."""
    env = os.environ if env is None else env
    files = [
        Path(env[f"{name}_FILE"])
        for setting in sorted(SECRET_SETTINGS)
        for name in SETTING_VARIABLES[setting]
        if env.get(f"{name}_FILE")
    ]
    directories = [DOCKER_SECRETS] + ([Path(env["CREDENTIALS_DIRECTORY"])] if env.get("CREDENTIALS_DIRECTORY") else [])
    return (
        files
        + [directory / setting for directory in directories for setting in sorted(SECRET_SETTINGS)]
        + tls_files(env)
        + ssh_files(env)
    )


def ssh_files(env: Mapping[str, str]) -> list[Path]:
    """An ssh:// engine's key and known_hosts file, when the environment names them: another key is
    another identity, another known_hosts another trust."""
    return [Path(v) for s in ("docker_ssh_identity", "docker_ssh_known_hosts") if (v := setting_from_env(s, env))]


def tls_files(env: Mapping[str, str]) -> list[Path]:
    """The Docker engine's TLS files when the environment turns TLS on (any non-empty DOCKER_TLS_VERIFY,
    as the docker CLI reads it): the client key is a secret, and another certificate is another identity."""
    if not setting_from_env("docker_tls_verify", env):
        return []
    directory = setting_from_env("docker_cert_path", env)
    base = Path(directory) if directory else Path(env.get("HOME") or Path.home()) / ".docker"
    return [base / name for name in ("ca.pem", "cert.pem", "key.pem")]


def run_files_digest(config_file: Path | None, policy_file: Path | None, env: Mapping[str, str] | None = None) -> str:
    """What a command and the daemon compare before a run is handed over: the config and secret files, and
    the policy file (two parts: the daemon takes the first before it reads the config, the second before
    it reads the policy)."""
    import hashlib

    return hashlib.sha256(
        (files_digest([config_file, *secret_files(env)]) + ":" + files_digest([policy_file])).encode()
    ).hexdigest()


def env_digest(env: Mapping[str, str], names: Iterable[str]) -> str:
    """A digest of the named variables' values (unset and empty alike, as the settings read them): the
    values themselves (database passwords) never leave the process."""
    import hashlib  # here, not at the top: `runbook --help` has no use for it

    hasher = hashlib.sha256()
    for name in sorted(set(names)):
        hasher.update(name.encode() + b"=" + (env.get(name) or "").encode("utf-8", "surrogateescape") + b"\0")
    return hasher.hexdigest()


MAX_DIGESTED = 1 << 20  # bytes of a config, policy or secret file compared; larger ones are never matched


def files_digest(paths: Iterable[Path | None]) -> str:
    """A digest of the files' contents (config, policy and secret files): whether they changed since.
    Only regular files are read, and only up to MAX_DIGESTED: a pipe (`DATABASE_URL_FILE=<(pass db)`)
    or a device must not be drained or waited on here, so it gets a digest that matches nothing, and
    the run is never handed over (the command reads its secret itself)."""
    import hashlib
    import stat as stat_module

    hasher = hashlib.sha256()
    for path in paths:
        data = b"\0none"
        if path is not None:
            try:
                status = path.stat()
                if not stat_module.S_ISREG(status.st_mode) or status.st_size > MAX_DIGESTED:
                    data = b"\0unmatchable" + os.urandom(16)
                else:
                    data = path.read_bytes()
            except OSError:
                data = b"\0unreadable"
        hasher.update(hashlib.sha256(data).digest())
    return hasher.hexdigest()
