"""Remediations on PostgreSQL: end idle-in-transaction sessions, restore from a backup (plans only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import Field, SecretStr

from agent.plugin_api import Change, Duration, EffectSpec, Params, PlanContext, PlanError, PluginSet

plugins = PluginSet("postgres")

# What pg_dump's custom format (-Fc) starts with. Only such archives are restored: pg_restore runs SQL
# against the database, never psql meta-commands (`\! id` in a plain .sql file runs a shell command).
ARCHIVE_MAGIC = b"PGDMP"


class TerminateSpec(EffectSpec):
    dsn: SecretStr
    pid: int
    backend_start: str


class DumpSpec(EffectSpec):
    dsn: SecretStr
    directory: str
    database: str


class RestoreSpec(EffectSpec):
    """Restore `path`, which must still be the file approved: same size and SHA-256."""

    dsn: SecretStr
    path: str
    size: int
    sha256: str


class _Params(Params):
    dsn: str = Field(description="libpq connection string or URL.")


def database_key(ctx: PlanContext, dsn: str) -> str:
    """`postgres:host:port/db` of the server a DSN reaches, as the server itself says."""
    host, port, db = ctx.postgres(dsn).rows(
        "SELECT coalesce(inet_server_addr()::text, 'local'), coalesce(inet_server_port(), 0), current_database()"
    )[0]
    return f"postgres:{host}:{port}/{db}"


class TerminateIdleParams(_Params):
    older_than: Duration = Field(60.0, description="Only sessions idle in a transaction longer than this.")
    include_superusers: bool = Field(False, description="Also end superusers' sessions.")
    max_sessions: int = Field(200, ge=1, description="Never end more than this many in one go.")


@plugins.remediation(
    "postgres.terminate_idle", TerminateIdleParams, effects={"postgres.backend.terminate": TerminateSpec}
)
def terminate_idle(ctx: PlanContext, params: TerminateIdleParams) -> list[Change]:
    """End sessions idle in a transaction for longer than N. Never the agent's own sessions; superusers'
    only when allowed. Each session is named by pid and start time, so a reused pid is never hit."""
    rows = ctx.postgres(params.dsn).rows(
        "SELECT a.pid, a.usename, a.application_name, a.backend_start::text, r.rolsuper,"
        " date_trunc('second', a.state_change)::text"
        " FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid"
        " WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)')"
        " AND now() - a.state_change > make_interval(secs => %s)"
        " AND a.pid <> pg_backend_pid() AND a.application_name <> 'runbook-agent'"
        " ORDER BY a.state_change",
        (params.older_than,),
    )
    sessions = [r for r in rows if params.include_superusers or not r[4]]
    if len(sessions) > params.max_sessions:
        raise PlanError(f"{len(sessions)} sessions to end, more than max_sessions {params.max_sessions}")
    target = database_key(ctx, params.dsn)
    return [
        Change(
            effect="postgres.backend.terminate",
            target=target,
            # Stable facts only (no "idle for Ns"): the plan's fingerprint must not change by itself.
            summary=f"terminate pid {pid} ({user}, {app or 'no application_name'}, idle in transaction since {idle})",
            before="idle in transaction",
            after="terminated",
            spec=TerminateSpec(dsn=SecretStr(params.dsn), pid=pid, backend_start=started),
        )
        for pid, user, app, started, _, idle in sessions
    ]


class RestoreParams(_Params):
    backup: str = Field(
        description="A pg_dump custom-format archive (-Fc) in the backup directory (backup_dir, default"
        " STATE_DIR/backups): its name there, or a path inside it. The guide's db:restore."
    )


def sha256_of(fd: int) -> tuple[int, str]:
    """Size and SHA-256 of an open file, read from its start."""
    digest, size = hashlib.sha256(), 0
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def allowed_backup(directory: Path, backup: str) -> Path:
    """The backup's real path, if it is a regular file inside the backup directory (after resolving
    symlinks and `..`): a restore never reads a file from anywhere else."""
    root = directory.resolve()
    path = (root / backup).resolve()
    if not path.is_relative_to(root) or path == root:
        raise PlanError(f"backup {backup} is not inside the backup directory {root}")
    if not path.is_file():
        raise PlanError(f"backup {path} does not exist (or is not a file)")
    return path


@plugins.remediation(
    "postgres.restore",
    RestoreParams,
    effects={"postgres.database.dump": DumpSpec, "postgres.database.restore": RestoreSpec},
    manual_only=True,
)
def restore(ctx: PlanContext, params: RestoreParams) -> list[Change]:
    """Restore the database from a custom-format backup in the backup directory. Destructive: manual
    approval only, bound to the file's SHA-256; the current database is dumped first, so the restore can
    itself be undone."""
    directory = ctx.settings.backups_path
    path = allowed_backup(directory, params.backup)
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.read(fd, len(ARCHIVE_MAGIC)) != ARCHIVE_MAGIC:
            raise PlanError(
                f"backup {path} is not a pg_dump custom-format archive (pg_dump -Fc): plain SQL can run psql"
                " meta-commands such as \\!, so it is never restored"
            )
        size, sha256 = sha256_of(fd)
    finally:
        os.close(fd)
    target = database_key(ctx, params.dsn)
    db = target.rsplit("/", 1)[1]
    dsn = SecretStr(params.dsn)
    return [
        Change(
            effect="postgres.database.dump",
            target=target,
            summary=f"dump database {db} to {directory}/{db}-before-restore-<time>.dump before restoring",
            before=None,
            after=str(directory),
            spec=DumpSpec(dsn=dsn, directory=str(directory), database=db),
        ),
        Change(
            effect="postgres.database.restore",
            target=target,
            summary=f"restore database {db} from {path} ({size} bytes, sha256 {sha256[:16]})",
            before=None,
            after=str(path),
            spec=RestoreSpec(dsn=dsn, path=str(path), size=size, sha256=sha256),
        ),
    ]
