"""PostgreSQL checks against the sandbox's real server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.audit import AuditLog
from agent.config import load_settings
from agent.context import RunClients
from agent.executor import Executor
from agent.loader import LoadedRunbook, RunbookSet
from agent.models import CheckResult
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.status import Status
from agent.templating import Templates
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


def _run(tmp_path: Path, checks: list[dict[str, Any]]) -> dict[str, CheckResult]:
    """One run of `checks` through the real executor (one set of clients, checks at once)."""
    settings = load_settings(env={**stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(tmp_path)})
    spec = Runbook.model_validate({"id": "pg", "title": "PG", "severity": "SEV-4", "checks": checks})
    runbooks = RunbookSet({"pg": LoadedRunbook(spec, Path("pg.yaml"))}, Templates(), Registry())
    redactor = Redactor()
    executor = Executor(runbooks, settings, redactor, AuditLog(tmp_path / "audit.jsonl", redactor))
    return {c.id: c for c in executor.run("pg", actor="test").checks}


def test_the_session_checks_of_a_run_read_the_server_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pool, idle_in_transaction and long_query all read pg_stat_activity: one statement for the three, on
    # the diagnosis's critical path, after the connect that db_reachable makes.
    statements: list[str] = []
    real = RunClients.read_only_query

    def counted(self: RunClients, dsn: str, sql: str, *args: Any, **kwargs: Any) -> Any:
        statements.append(sql)
        return real(self, dsn, sql, *args, **kwargs)

    monkeypatch.setattr(RunClients, "read_only_query", counted)
    results = _run(
        tmp_path,
        [
            {"id": "db", "check": "postgres.query", "with": {"dsn": DSN}},
            {"id": "pool", "check": "postgres.connections", "with": {"dsn": DSN}, "needs": ["db"]},
            {"id": "idle", "check": "postgres.idle_in_transaction", "with": {"dsn": DSN}, "needs": ["db"]},
            {"id": "long", "check": "postgres.long_query", "with": {"dsn": DSN}, "needs": ["db"]},
        ],
    )
    assert {r.status for r in results.values()} == {Status.OK}, results
    assert len(statements) == 2 and "pg_stat_activity" in statements[1], statements


def test_a_check_cut_at_its_deadline_leaves_the_next_one_a_new_connection(tmp_path: Path) -> None:
    # `slow` holds the run's connection past its deadline and is cut; `next` was waiting for that
    # connection. It runs on a new one and finds the database up, not "connection lost".
    results = _run(
        tmp_path,
        [
            {
                "id": "slow",
                "check": "postgres.query",
                "with": {"dsn": DSN, "sql": "SELECT pg_sleep(5)"},
                "timeout": "1s",
            },
            {"id": "next", "check": "postgres.query", "with": {"dsn": DSN}, "timeout": "8s"},
        ],
    )
    assert (results["slow"].status, results["slow"].code) == (Status.CRITICAL, "timeout")
    assert results["next"].status is Status.OK, results["next"]
