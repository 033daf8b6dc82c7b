"""PostgreSQL checks against the sandbox's real server."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from agent.status import Status
from sandbox import faults, stack

pytestmark = pytest.mark.integration
DSN = stack.AGENT_ENV["DATABASE_URL"]


def test_query(probe) -> None:
    assert probe("postgres.query", dsn=DSN).status is Status.OK
    refused = probe("postgres.query", dsn="postgresql://runbook:x@127.0.0.1:1/app")
    assert (refused.status, refused.code) == (Status.CRITICAL, "db_unreachable")
    broken = probe("postgres.query", dsn=DSN, sql="SELECT * FROM no_such_table")
    assert (broken.status, broken.code) == (Status.CRITICAL, "db_query_failed")


def test_wrong_password_is_critical_and_not_shown(probe) -> None:
    result = probe("postgres.query", dsn="postgresql://runbook:wrong-pass-123@127.0.0.1:55432/app")
    assert (result.status, result.code) == (Status.CRITICAL, "db_unreachable")
    assert "password authentication failed" in result.summary and "wrong-pass-123" not in result.summary


def test_connections_and_idle_in_transaction(probe) -> None:
    healthy = probe("postgres.connections", dsn=DSN)
    assert healthy.status is Status.OK and healthy.metrics["max_connections"] == 30
    assert probe("postgres.idle_in_transaction", dsn=DSN, older_than="1s").status is Status.OK
    with faults.idle_in_transaction(24):
        time.sleep(1.5)
        result = probe("postgres.connections", dsn=DSN, warn_pct=60, crit_pct=80)
        assert (result.status, result.code) == (Status.CRITICAL, "db_connections_exhausted")
        assert result.metrics["connections"] >= 25
        idle = probe("postgres.idle_in_transaction", dsn=DSN, older_than="1s", warn=1, crit=5)
        assert (idle.status, idle.code) == (Status.CRITICAL, "db_idle_in_transaction")
        assert idle.metrics["idle_in_transaction"] == 24


def test_long_query(probe) -> None:
    assert probe("postgres.long_query", dsn=DSN, warn_seconds=1).status is Status.OK
    conn = psycopg.connect(faults.APP_DSN, autocommit=True)
    sleeper = threading.Thread(target=lambda: conn.execute("SELECT pg_sleep(4)"), daemon=True)
    sleeper.start()
    try:
        time.sleep(1.5)
        result = probe("postgres.long_query", dsn=DSN, warn_seconds=1, crit_seconds=60)
        assert (result.status, result.code) == (Status.WARNING, "db_long_query")
        assert "pg_sleep" in result.details["query"]
    finally:
        sleeper.join(10)
        conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE rbtest_written (id int)",
        "COMMIT; CREATE TABLE rbtest_written (id int)",
        "SET default_transaction_read_only = off; CREATE TABLE rbtest_written (id int)",
    ],
)
def test_a_check_never_writes(probe, sql: str) -> None:
    # A dry run once ran CREATE TABLE through postgres.query: checks now read in read-only transactions,
    # one statement each.
    result = probe("postgres.query", dsn=DSN, sql=sql)
    assert (result.status, result.code) == (Status.CRITICAL, "db_query_failed")
    with psycopg.connect(DSN) as conn:
        assert conn.execute("SELECT to_regclass('rbtest_written')").fetchone() == (None,)
