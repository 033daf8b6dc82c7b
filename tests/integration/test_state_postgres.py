"""The state store on PostgreSQL: every state test again on a real server, and what only several agents
sharing one database can show (one migration, one lock holder, one run per incident, one interruption of
a lost agent's run, a connection the server dropped)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.exceptions import StateUnavailable
from agent.state import StateStore
from tests.integration.conftest import REPO, state_database
from tests.state_backend import ENV, PREFIX

pytestmark = pytest.mark.integration

# The unit tests of everything kept in the state store: locks, limits, breakers, pause, approvals, runs,
# intake, retention, incidents, escalations, the outbox, agents.
STATE_TESTS = [
    "tests/unit/test_state.py",
    "tests/unit/test_remediate.py",
    "tests/unit/test_incidents.py",
    "tests/unit/test_outbox.py",
    "tests/unit/test_rollout.py",
]


def test_every_state_test_passes_on_postgresql(state_server: str, tmp_path: Path) -> None:
    env = {**os.environ, ENV: state_server}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *STATE_TESTS, "-q", "-p", "no:cacheprovider", "-p", "no:warnings", "-rs"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # They ran on the server: each test's store is a database of its own there. Only the tests of
    # SQLite's own files and locking were skipped.
    with psycopg.connect(state_server, autocommit=True) as admin:
        made = [
            row[0] for row in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",))
        ]
        for database in made:
            admin.execute(f'DROP DATABASE "{database}"')
    assert len(made) >= 40, made
    sqlite_only = (REPO / "tests/unit/test_state.py").read_text().count("\n@sqlite_only\n")
    assert result.stdout.count("about SQLite's own files and locking") == sqlite_only, result.stdout[-3000:]


@pytest.fixture
def url(state_server: str) -> str:
    return state_database(state_server, "t")


def _open(url: str, start: Any) -> None:
    start.wait(10)
    StateStore(url).close()


def test_agents_starting_on_a_new_database_at_once_migrate_it_once(url: str) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    workers = [context.Process(target=_open, args=(url, start)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with psycopg.connect(url) as db:
        versions = db.execute("SELECT version FROM runbook.schema_version ORDER BY version").fetchall()
    assert versions == [(1,), (2,), (3,), (4,)]  # each migration once, however many agents raced to it


def _race(url: str, n: int, work: Any) -> list[Any]:
    """`work(store)` in n threads at once, each with its own connection (as n agents would be)."""
    stores = [StateStore(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait(10)
        results[i] = work(stores[i], i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    return results


def test_of_agents_racing_for_a_target_one_takes_its_lock(url: str) -> None:
    for attempt in range(10):
        target = f"container:app-{attempt}"
        results = _race(url, 4, lambda store, i, target=target: store.lock([target], f"run-{i}", ttl=60))
        assert sum(r is None for r in results) == 1, results


def test_of_agents_admitting_one_incident_at_once_one_starts_a_run(url: str) -> None:
    """What each daemon's intake does for an alert (is a run active for this incident? if not, record
    one), in the store's write transaction: on several agents at once, one run."""

    def admit(store: StateStore, i: int) -> bool:
        with store.write():
            if store.active_run("app-down", "service=app"):
                return False
            store.add_run(
                run_id=f"run-{i}", runbook="app-down", target="service=app", mode="live", actor="a", params={}
            )
            return True

    results = _race(url, 4, admit)
    assert sum(results) == 1
    assert len(StateStore(url).runs()) == 1


def test_a_dropped_connection_fails_one_call_cleanly_and_the_next_reconnects(url: str) -> None:
    store = StateStore(url)
    store.set_paused(True, "me", "before")
    with psycopg.connect(url, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'runbook'"
            " AND datname = current_database()"
        ).fetchall()
    assert dropped
    time.sleep(0.2)
    with pytest.raises(StateUnavailable) as failed:  # the call that finds the connection gone: one line
        store.paused()
    assert "state-s3cret-pw" not in failed.value.message and "\n" not in failed.value.message
    assert store.paused() is not None and store.paused()[0] == "before"  # type: ignore[index]


def test_the_tables_live_in_their_own_schema(url: str) -> None:
    StateStore(url).close()
    with psycopg.connect(url) as db:
        public = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        ours = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'runbook'").fetchone()
    assert public == (0,) and ours is not None and ours[0] >= 12


def test_of_survivors_sweeping_a_lost_agent_at_once_each_run_is_taken_once(url: str) -> None:
    lost = StateStore(url)
    lost.agent_id = "lost"
    lost.register_agent("lost", "1.0")
    for i in range(20):
        lost.add_run(run_id=f"r{i}", runbook="x", target=f"t{i}", mode="live", actor="a", params={})
    with lost.write() as db:
        db.execute("UPDATE agents SET heartbeat = heartbeat - 600")
    for attempt in range(3):
        results = _race(url, 4, lambda store, i: store.interrupt_lost(30))
        taken = [run for result in results for run in result]
        assert len(taken) == len(set(taken)) and (attempt > 0 or len(taken) == 20), results
        assert attempt == 0 or taken == []


def test_of_agents_taking_from_the_queue_at_once_each_run_is_taken_once(url: str) -> None:
    """Eight agents' workers claiming 40 queued runs at once, each over and over until the queue is
    empty (SKIP LOCKED): every run taken exactly once, none left."""
    queuer = StateStore(url)
    queuer.agent_id = "queuer"
    for i in range(40):
        queuer.add_run(
            run_id=f"q{i}",
            runbook="x",
            target=f"t{i}",
            mode="live",
            actor="a",
            params={},
            status="queued",
            origin={"actor": "a"},
        )

    def drain(store: StateStore, i: int) -> list[str]:
        store.agent_id = f"agent-{i}"
        taken = []
        while (run := store.claim_run("live", ["x"], 0)) is not None:
            taken.append(run.run_id)
        return taken

    results = _race(url, 8, drain)
    taken = [run for result in results for run in result]
    assert sorted(taken) == sorted(f"q{i}" for i in range(40)), results  # each once
    assert queuer.queued_count("live", 0) == 0
