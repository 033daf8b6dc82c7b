"""Remediations on PostgreSQL: end idle-in-transaction sessions, restore from a backup (plans only)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent.changes import Change
from agent.context import PlanContext
from agent.exceptions import PlanError
from agent.plugins import PluginSet
from agent.schema import Duration

plugins = PluginSet("postgres")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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


@plugins.remediation("postgres.terminate_idle", TerminateIdleParams, effects=("postgres.backend.terminate",))
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
            spec={"dsn": params.dsn, "pid": pid, "backend_start": started},
        )
        for pid, user, app, started, _, idle in sessions
    ]


class RestoreParams(_Params):
    backup: str = Field(
        description="Plain SQL backup to restore (pg_dump --clean --if-exists), the guide's db:restore."
    )
    dump_dir: str | None = Field(None, description="Where the pre-restore dump goes; default: STATE_DIR/backups.")


@plugins.remediation(
    "postgres.restore",
    RestoreParams,
    effects=("postgres.database.dump", "postgres.database.restore"),
    manual_only=True,
)
def restore(ctx: PlanContext, params: RestoreParams) -> list[Change]:
    """Restore the database from a backup file. Destructive: manual approval only, and the current
    database is dumped first so the restore can itself be undone."""
    backup = Path(params.backup)
    if not backup.is_file():
        raise PlanError(f"backup {backup} does not exist")
    target = database_key(ctx, params.dsn)
    db = target.rsplit("/", 1)[1]
    # The time is filled in when the dump is made, so the plan (and its approval) stays the same until then.
    dump = Path(params.dump_dir or ctx.settings.state_dir / "backups") / f"{db}-before-restore-{{time}}.sql"
    return [
        Change(
            effect="postgres.database.dump",
            target=target,
            summary=f"dump database {db} to {dump} before restoring",
            before=None,
            after=str(dump),
            spec={"dsn": params.dsn, "path": str(dump)},
        ),
        Change(
            effect="postgres.database.restore",
            target=target,
            summary=f"restore database {db} from {backup} ({backup.stat().st_size} bytes)",
            before=str(dump),
            after=str(backup),
            spec={"dsn": params.dsn, "path": str(backup.resolve()), "size": backup.stat().st_size},
        ),
    ]
