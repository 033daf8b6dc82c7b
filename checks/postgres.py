"""Checks against PostgreSQL: connect + query, connection use, idle-in-transaction sessions, long queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from agent.plugin_api import CheckContext, Duration, Outcome, Params, PluginSet, Status, TargetUnreachable, above

plugins = PluginSet("postgres")


class _Params(Params):
    dsn: str = Field(description="libpq connection string or URL (secret: its password is always masked).")


def _query(ctx: CheckContext, dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    try:
        # A read-only transaction, one statement: SQL is the runbook author's or ours, values only as
        # parameters, and a check never writes. Cut off at the check's deadline.
        rows = ctx.clients.read_only_query(dsn, sql, args, watchdog=ctx.watchdog)
    except psycopg.errors.QueryCanceled:
        raise TargetUnreachable("db_timeout", "PostgreSQL query timed out") from None
    except psycopg.OperationalError as exc:
        if ctx.remaining() <= 0:
            raise TargetUnreachable("db_timeout", "PostgreSQL gave no answer in time") from None
        raise TargetUnreachable("db_unreachable", f"PostgreSQL connection lost: {str(exc).strip()}") from None
    # A SQL_ASCII database hands text back as bytes; results are for people and JSON.
    return [tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row) for row in rows]


class QueryParams(_Params):
    sql: str = Field("SELECT 1", description="Query to run; OK when it runs.")


@plugins.check("postgres.query", QueryParams)
def query(ctx: CheckContext, params: QueryParams) -> Outcome:
    """Connect and run a query (default SELECT 1): the guide's `psql $DATABASE_URL -c "SELECT 1"`."""
    import psycopg

    try:
        rows = _query(ctx, params.dsn, params.sql)
    except psycopg.Error as exc:
        return Outcome(Status.CRITICAL, f"query failed: {str(exc).strip()}", code="db_query_failed")
    first = rows[0][0] if rows and rows[0] else None
    return Outcome(Status.OK, f"query ran, {len(rows)} row(s)", details={"first_value": str(first)[:1_000]})


# What the session checks below read: pg_stat_activity as one statement saw it, once per run (by whichever
# of them asks first; the others wait for it): three checks, one round trip on the critical path of a
# diagnosis. A verification or final pass reads it afresh (new clients), so a change is always seen.
_ACTIVITY = (
    "SELECT pid = pg_backend_pid(), backend_type, coalesce(state, 'background'), pid, usename, application_name,"
    " extract(epoch FROM now() - state_change), extract(epoch FROM now() - query_start), left(query, 120),"
    " current_setting('max_connections')::int FROM pg_stat_activity"
)
_IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


@dataclass(frozen=True, slots=True)
class _Session:
    own: bool  # the run's own connection, the one that read this
    client: bool  # a client backend (not a background worker)
    state: str
    pid: int
    user: str | None
    application: str | None
    state_s: float | None  # seconds in its current state
    query_s: float | None  # seconds since its current (or last) query began
    query: str | None


@dataclass(frozen=True, slots=True)
class _Activity:
    sessions: list[_Session]
    max_connections: int


def _activity(ctx: CheckContext, dsn: str) -> _Activity:
    def read() -> _Activity:
        rows = _query(ctx, dsn, _ACTIVITY)
        sessions = [
            _Session(
                bool(r[0]),
                r[1] == "client backend",
                str(r[2]),
                int(r[3]),
                r[4],
                r[5],
                None if r[6] is None else float(r[6]),
                None if r[7] is None else float(r[7]),
                r[8],
            )
            for r in rows
        ]
        # Our own session is a row, so there is always one to carry the setting; if not, ask for it.
        maximum = int(rows[0][9]) if rows else int(_query(ctx, dsn, "SHOW max_connections")[0][0])
        return _Activity(sessions, maximum)

    return ctx.clients.shared(("postgres.activity", dsn), read, ctx.remaining())


class ConnectionsParams(_Params):
    warn_pct: float = Field(80.0, ge=0, le=100, description="Connections in use (% of max) for WARNING.")
    crit_pct: float = Field(95.0, ge=0, le=100, description="Connections in use (% of max) for CRITICAL.")


@plugins.check("postgres.connections", ConnectionsParams)
def connections(ctx: CheckContext, params: ConnectionsParams) -> Outcome:
    """Connections in use against max_connections, with a breakdown by state."""
    activity = _activity(ctx, params.dsn)
    by_state: dict[str, int] = {}
    for session in activity.sessions:
        if session.client:
            by_state[session.state] = by_state.get(session.state, 0) + 1
    used = sum(by_state.values())
    maximum = activity.max_connections
    pct = 100.0 * used / maximum
    status = above(pct, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"{used} of {maximum} connections in use ({pct:.0f}%)",
        details={"by_state": by_state},
        metrics={"connections": float(used), "max_connections": float(maximum), "used_pct": round(pct, 1)},
        thresholds={"used_pct": (params.warn_pct, params.crit_pct)},
        code="db_connections_exhausted" if status is not Status.OK else None,
    )


class IdleInTransactionParams(_Params):
    older_than: Duration = Field(60.0, description="Only sessions idle in a transaction longer than this.")
    warn: int | None = Field(1, ge=1, description="Such sessions from which the result is WARNING.")
    crit: int | None = Field(5, ge=1, description="Such sessions from which the result is CRITICAL.")


@plugins.check("postgres.idle_in_transaction", IdleInTransactionParams)
def idle_in_transaction(ctx: CheckContext, params: IdleInTransactionParams) -> Outcome:
    """Sessions idle inside an open transaction for longer than N: they hold locks and connections."""
    idle = sorted(
        (
            s
            for s in _activity(ctx, params.dsn).sessions
            if s.state in _IDLE_IN_TRANSACTION and not s.own and s.state_s is not None and s.state_s > params.older_than
        ),
        key=lambda s: -(s.state_s or 0.0),  # the oldest first
    )
    count = len(idle)
    oldest = (idle[0].state_s or 0.0) if idle else 0.0
    status = above(count, params.warn, params.crit)
    return Outcome(
        status,
        f"{count} sessions idle in transaction for over {params.older_than:g}s"
        + (f" (oldest {oldest:.0f}s)" if idle else ""),
        details={
            "sessions": [
                {"pid": s.pid, "user": s.user, "application": s.application, "idle_s": round(s.state_s or 0.0, 1)}
                for s in idle[:20]
            ]
        },
        metrics={"idle_in_transaction": float(count), "oldest_idle_s": round(oldest, 1)},
        thresholds={"idle_in_transaction": (params.warn, params.crit)},
        code="db_idle_in_transaction" if status is not Status.OK else None,
    )


class LongQueryParams(_Params):
    warn_seconds: Duration | None = Field(30.0, description="Longest running query for WARNING (seconds, or 30s).")
    crit_seconds: Duration | None = Field(300.0, description="Longest running query for CRITICAL (seconds, or 5m).")


@plugins.check("postgres.long_query", LongQueryParams)
def long_query(ctx: CheckContext, params: LongQueryParams) -> Outcome:
    """The longest running active query, with its pid and first characters."""
    running = [
        s
        for s in _activity(ctx, params.dsn).sessions
        if s.state == "active" and s.client and not s.own and s.query_s is not None
    ]
    if not running:
        return Outcome(Status.OK, "no other query running", metrics={"longest_query_s": 0.0})
    longest = max(running, key=lambda s: s.query_s or 0.0)
    seconds = longest.query_s or 0.0
    status = above(seconds, params.warn_seconds, params.crit_seconds)
    return Outcome(
        status,
        f"longest query running {seconds:.0f}s (pid {longest.pid})",
        details={"pid": longest.pid, "query": longest.query},
        metrics={"longest_query_s": round(seconds, 1)},
        thresholds={"longest_query_s": (params.warn_seconds, params.crit_seconds)},
        code="db_long_query" if status is not Status.OK else None,
    )
