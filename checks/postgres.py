"""Checks against PostgreSQL: connect + query, connection use, idle-in-transaction sessions, long queries."""

from __future__ import annotations

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
    return Outcome(Status.OK, f"query ran, {len(rows)} row(s)", details={"first_value": str(first)})


class ConnectionsParams(_Params):
    warn_pct: float = Field(80.0, ge=0, le=100, description="Connections in use (% of max) for WARNING.")
    crit_pct: float = Field(95.0, ge=0, le=100, description="Connections in use (% of max) for CRITICAL.")


@plugins.check("postgres.connections", ConnectionsParams)
def connections(ctx: CheckContext, params: ConnectionsParams) -> Outcome:
    """Connections in use against max_connections, with a breakdown by state."""
    rows = _query(
        ctx,
        params.dsn,
        "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' GROUP BY 1",
    )
    by_state = {str(state): int(n) for state, n in rows}
    used = sum(by_state.values())
    maximum = int(_query(ctx, params.dsn, "SHOW max_connections")[0][0])
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
    rows = _query(
        ctx,
        params.dsn,
        "SELECT pid, usename, application_name, extract(epoch FROM now() - state_change)"
        " FROM pg_stat_activity WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')"
        " AND now() - state_change > make_interval(secs => %s) AND pid <> pg_backend_pid()"
        " ORDER BY state_change",
        (params.older_than,),
    )
    count = len(rows)
    oldest = float(rows[0][3]) if rows else 0.0
    status = above(count, params.warn, params.crit)
    return Outcome(
        status,
        f"{count} sessions idle in transaction for over {params.older_than:g}s"
        + (f" (oldest {oldest:.0f}s)" if rows else ""),
        details={
            "sessions": [
                {"pid": r[0], "user": r[1], "application": r[2], "idle_s": round(float(r[3]), 1)} for r in rows[:20]
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
    rows = _query(
        ctx,
        params.dsn,
        "SELECT pid, extract(epoch FROM now() - query_start), left(query, 120) FROM pg_stat_activity"
        " WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        " ORDER BY query_start LIMIT 1",
    )
    if not rows:
        return Outcome(Status.OK, "no other query running", metrics={"longest_query_s": 0.0})
    pid, seconds, text = rows[0][0], float(rows[0][1]), rows[0][2]
    status = above(seconds, params.warn_seconds, params.crit_seconds)
    return Outcome(
        status,
        f"longest query running {seconds:.0f}s (pid {pid})",
        details={"pid": pid, "query": text},
        metrics={"longest_query_s": round(seconds, 1)},
        thresholds={"longest_query_s": (params.warn_seconds, params.crit_seconds)},
        code="db_long_query" if status is not Status.OK else None,
    )
