"""The state store: versioned migrations, private files, intake in one transaction, retention."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from agent.state import SCHEMA_VERSION, StateStore
from tests.state_backend import open_state, sqlite_only

# The schema as the first release wrote it (no user_version): a copy an upgrade must carry over.
FIRST_SCHEMA = """
CREATE TABLE actions (id INTEGER PRIMARY KEY, at REAL NOT NULL, run_id TEXT NOT NULL, runbook TEXT NOT NULL,
    remediation TEXT NOT NULL, target TEXT NOT NULL, effect TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE INDEX actions_target_at ON actions (target, at);
CREATE TABLE locks (target TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    expires REAL NOT NULL);
CREATE TABLE breakers (target TEXT PRIMARY KEY, opened REAL NOT NULL, until REAL NOT NULL, run_id TEXT NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL, actor TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, runbook TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
    mode TEXT NOT NULL, actor TEXT NOT NULL, params TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    created REAL NOT NULL, finished REAL, result TEXT, report TEXT, alert_id INTEGER);
CREATE INDEX runs_target ON runs (runbook, target, created);
CREATE TABLE alerts (id INTEGER PRIMARY KEY, received REAL NOT NULL, source TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    runbook TEXT, target TEXT, disposition TEXT NOT NULL, run_id TEXT);
CREATE TABLE pending (run_id TEXT NOT NULL, remediation TEXT NOT NULL, fingerprint TEXT NOT NULL, plan TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (run_id, remediation));
"""


@sqlite_only
def test_a_database_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FIRST_SCHEMA)
    db.execute(
        "INSERT INTO runs VALUES ('r1', 'app-down', '-', 'finished', 'live', 'me', '{\"a\": \"1\"}', 'h', 1, 1.0,"
        " 2.0, 'OK', NULL, NULL)"
    )
    db.execute(
        "INSERT INTO actions VALUES (1, ?, 'r1', 'app-down', 'restart', 'container:x', 'e', 'ok')", (time.time(),)
    )
    db.commit()
    db.close()
    store = StateStore(path)
    assert store._version() == SCHEMA_VERSION
    (run,) = store.runs()
    assert (run["run_id"], run["params"], run["secret_params"]) == ("r1", {"a": "1"}, [])
    assert len(store.runs_on_target("container:x", 0)) == 1
    store.close()
    assert StateStore(path)._version() == SCHEMA_VERSION  # opening again migrates nothing


@sqlite_only
def test_state_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = StateStore(tmp_path / "state" / "state.sqlite3")
        store.add_run(run_id="r", runbook="x", target="-", mode="live", actor="me", params={})
    finally:
        os.umask(old)
    for path in (tmp_path / "state").iterdir():  # the database, its -wal and -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


@sqlite_only
def test_a_loose_state_directory_of_an_older_version_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    (directory / "state.sqlite3").touch(mode=0o644)
    StateStore(directory / "state.sqlite3")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "state.sqlite3").stat().st_mode) == 0o600


def test_prune_keeps_what_is_recent_and_what_is_running(tmp_path: Path) -> None:
    store = open_state(tmp_path)
    alert = {
        "source": "s",
        "fingerprint": "f",
        "status": "firing",
        "name": "A",
        "labels": {},
        "annotations": {},
        "runbook": None,
        "target": None,
        "disposition": "no_runbook",
        "run_id": None,
    }
    store.record_intake([alert, alert], [], [])
    store.add_run(run_id="old", runbook="x", target="-", mode="live", actor="me", params={}, status="finished")
    store.add_run(run_id="busy", runbook="x", target="-", mode="live", actor="me", params={}, status="running")
    counts = store.prune(alerts_before=time.time() + 1, runs_before=time.time() + 1, actions_before=0)
    assert counts["alerts"] == 2 and counts["runs"] == 1
    assert [r["run_id"] for r in store.runs()] == ["busy"]
    assert json.dumps(counts)


@sqlite_only
def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """Two `runbook run` started together on a fresh state directory: neither fails with "database is
    locked" (SQLite answers a second switch to WAL at once, without the busy timeout)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(40):  # the race is narrow: without the retry about one start in four failed
        path = tmp_path / f"s{attempt}" / "state.sqlite3"
        start = context.Barrier(4)
        workers = [context.Process(target=_open_store, args=(path, start)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0, 0, 0, 0], attempt


def _open_store(path: Path, start: Any) -> None:
    start.wait(10)
    StateStore(path).close()


def _age_heartbeat(store: StateStore, agent_id: str, seconds: float) -> None:
    with store.write() as db:
        db.execute("UPDATE agents SET heartbeat = ? WHERE agent_id = ?", (time.time() - seconds, agent_id))


def test_the_runs_of_an_agent_that_stopped_its_heartbeat_are_interrupted_once(tmp_path: Path) -> None:
    """A daemon killed -9 (or its host lost) leaves runs running: the agents sharing the state mark them
    interrupted once it has been silent for `agent_dead_after`, and only once between them. Its queued
    runs never began: they stay queued, for another agent to take."""
    store = open_state(tmp_path)
    store.agent_id = "lost"
    store.register_agent("lost", "1.0")
    store.add_run(run_id="r1", runbook="x", target="-", mode="live", actor="a", params={})
    store.add_run(
        run_id="r2", runbook="x", target="-", mode="live", actor="a", params={}, status="queued", origin={"actor": "a"}
    )
    store.add_run(run_id="done", runbook="x", target="-", mode="live", actor="a", params={}, status="finished")
    assert store.interrupt_lost(30) == []  # its heartbeat is fresh
    _age_heartbeat(store, "lost", 60)
    survivors = [open_state(tmp_path), open_state(tmp_path)]
    taken = [item for other in survivors for item in other.interrupt_lost(30)]
    assert sorted(taken) == [("r1", "lost")]  # once, by one of them
    assert {r["run_id"]: r["status"] for r in store.runs()} == {
        "r1": "interrupted",
        "r2": "queued",
        "done": "finished",
    }
    assert survivors[0].claim_run("live", ["x"], 0).run_id == "r2"  # taken from the queue instead
    (agent,) = store.agents()
    assert (agent.agent_id, agent.version, agent.stopped) == ("lost", "1.0", None)


def test_only_runs_of_a_lost_or_stopped_agent_are_taken(tmp_path: Path) -> None:
    store = open_state(tmp_path)
    store.add_run(run_id="cli", runbook="x", target="-", mode="live", actor="a", params={})
    store.register_agent("old", "1.0")
    _age_heartbeat(store, "old", 600)  # lost, but the run is a `runbook run`'s, not its own
    assert store.interrupt_lost(0.5) == []
    store.agent_id = "alive"
    store.register_agent("alive", "1.0")
    store.add_run(run_id="busy", runbook="x", target="-", mode="live", actor="a", params={})
    assert store.interrupt_lost(30) == []
    store.lock(["container:x"], "busy", ttl=60)
    (alive,) = [a for a in store.agents() if a.agent_id == "alive"]
    assert store.held_by(alive) == (["container:x"], ["busy"])
    store.agent_stopped("alive")  # stopped, and a run was left behind: taken at once
    assert store.interrupt_lost(30) == [("busy", "alive")]


def test_a_run_moved_on_elsewhere_changes_owner_and_only_then(tmp_path: Path) -> None:
    store = open_state(tmp_path)
    store.agent_id = "a1"
    store.add_run(run_id="r", runbook="x", target="-", mode="live", actor="a", params={}, status="queued")
    other = open_state(tmp_path)
    other.agent_id, other.host = "a2", "elsewhere"
    other.set_run("r", "finished", report={"x": 1})  # a report written by another: the owner stays
    assert other.query("SELECT agent, host FROM runs WHERE run_id = 'r'") == [("a1", store.host)]
    other.set_run("r", "running")  # it goes on with the run there (an approval): its own now
    assert other.query("SELECT agent, host FROM runs WHERE run_id = 'r'") == [("a2", "elsewhere")]


def test_a_lock_of_another_pid_namespace_is_never_judged_by_a_pid_here(tmp_path: Path) -> None:
    """Containers sharing a hostname have pid namespaces of their own: a dead pid here says nothing of
    a process there, so only expiry frees its lock; a dead holder of this very namespace frees it."""
    store = open_state(tmp_path)
    assert store.host.startswith(socket.gethostname() + "/pidns:")
    dead = _dead_pid()
    with store.write() as db:
        db.execute(
            "INSERT INTO locks (target, run_id, host, pid, expires) VALUES (?, 'theirs', ?, ?, ?)",
            ("container:a", socket.gethostname() + "/pidns:1", dead, time.time() + 60),
        )
        db.execute(
            "INSERT INTO locks (target, run_id, host, pid, expires) VALUES (?, 'gone', ?, ?, ?)",
            ("container:b", store.host, dead, time.time() + 60),
        )
    assert "locked by run theirs" in (store.lock(["container:a"], "mine", ttl=60) or "")
    assert store.lock(["container:b"], "mine", ttl=60) is None


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_an_unreachable_state_database_is_one_line_without_its_password() -> None:
    from agent.exceptions import StateUnavailable

    # Refused; and a password libpq quotes in its error (a `%` not followed by hex digits).
    for password in ("hunter2-secret", "hunter2%zz-secret"):
        try:
            StateStore(f"postgresql://agent:{password}@127.0.0.1:1/state")
        except StateUnavailable as exc:
            assert "hunter2" not in exc.message and exc.message.startswith("state database: "), exc.message
            assert "\n" not in exc.message and exc.exit_code == 3
        else:
            raise AssertionError("connected to nothing")


@sqlite_only
def test_opening_the_store_again_in_a_process_keeps_its_locks(tmp_path: Path) -> None:
    """The daemon opens the store twice (its heartbeat has a connection of its own). Closing any
    descriptor of the database file drops every POSIX lock the process holds on it, SQLite's write lock
    with them: opening it again must never do that, or another process would write in the middle of a
    transaction (and this one's commits were lost)."""
    import subprocess
    import sys

    store = open_state(tmp_path)
    with store.write():
        open_state(tmp_path).close()
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None);"
                " db.execute('BEGIN IMMEDIATE')",
                str(tmp_path / "state.sqlite3"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode != 0 and "database is locked" in other.stderr, other.stderr


def _queue(store: StateStore, run_id: str, *, runbook: str = "x", mode: str = "live", agent: str = "a1") -> None:
    store.agent_id = agent
    origin = {"actor": "alertmanager", "alert_name": "AppDown", "severity_label": "critical", "detected": 1.5}
    store.add_run(
        run_id=run_id,
        runbook=runbook,
        target="-",
        mode=mode,
        actor="am",
        params={"s": "app"},
        status="queued",
        origin=origin,
    )


def test_the_run_queue_is_shared_and_each_run_is_taken_once(tmp_path: Path) -> None:
    """Any agent takes the oldest queued run it can run (its mode, a runbook it has, still fresh); two
    agents taking at once never take the same run; the run becomes the taker's, running."""
    store = open_state(tmp_path)
    for run_id in ("r1", "r2", "r3"):
        _queue(store, run_id)
        time.sleep(0.01)
    _queue(store, "dry", mode="dry-run")
    _queue(store, "other", runbook="y")
    assert store.queued_count("live", 0) == 4 and store.queued_count("dry-run", 0) == 1
    agents = [open_state(tmp_path) for _ in range(2)]
    for i, agent in enumerate(agents):
        agent.agent_id = f"b{i}"
    first = agents[0].claim_run("live", ["x"], 0)
    assert first is not None and first.run_id == "r1"  # the oldest first
    assert (first.queued_by, first.params, first.actor) == ("a1", {"s": "app"}, "am")
    assert first.origin == {
        "actor": "alertmanager",
        "alert_name": "AppDown",
        "severity_label": "critical",
        "detected": 1.5,
    }
    assert agents[0].query("SELECT status, agent FROM runs WHERE run_id = 'r1'") == [("running", "b0")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        taken = list(pool.map(lambda agent: agent.claim_run("live", ["x"], 0), agents))
    assert sorted(t.run_id for t in taken if t) == ["r2", "r3"]  # each once
    assert agents[0].claim_run("live", ["x"], 0) is None  # y's run: not a runbook this agent has
    assert agents[1].claim_run("dry-run", ["x"], 0).run_id == "dry"  # a dry run only by a dry-run agent
    assert agents[1].claim_run("live", ["y"], time.time() + 60) is None  # too old to begin now
    assert agents[1].claim_run("live", [], 0) is None
    (stale,) = store.interrupt_stale(time.time() + 1)
    assert (stale.run_id, stale.runbook, stale.origin["alert_name"]) == ("other", "y", "AppDown")
    assert store.run("other")["status"] == "interrupted" and store.queued_count("live", 0) == 0
    assert store.queue() == (0, None)


def test_the_last_agent_of_a_mode_to_stop_interrupts_the_queue(tmp_path: Path) -> None:
    store = open_state(tmp_path)
    _queue(store, "mine", agent="a1")
    _queue(store, "theirs", agent="a2")
    _queue(store, "dry", agent="a2", mode="dry-run")
    store.register_agent("a1", "1.0")
    store.register_agent("a2", "1.0")
    store.register_agent("d1", "1.0", mode="dry-run")
    assert store.agents_alive(30, besides="a1", mode="live") == ["a2"]  # a dry-run agent takes no live run
    store.agent_stopping("a2")  # stopping: it takes nothing more
    assert store.agents_alive(30, besides="a1", mode="live") == []
    assert sorted(store.interrupt_queued("live")) == ["mine", "theirs"]  # every live one, whoever queued it
    assert {r["run_id"]: r["status"] for r in store.runs()} == {
        "mine": "interrupted",
        "theirs": "interrupted",
        "dry": "queued",
    }
    assert store.queue()[0] == 1


def test_a_run_is_begun_by_one_process_only(tmp_path: Path) -> None:
    """The executor begins a recorded run only if it is queued or this process took it: a run another
    agent took is never run here too (an older agent with its own in-memory queue, say). Runs an older
    agent queued (no origin) are never taken from it."""
    store = open_state(tmp_path)
    _queue(store, "r1")
    other = open_state(tmp_path)
    other.agent_id, other.host = "a2", "elsewhere"
    assert other.claim_run("live", ["x"], 0).run_id == "r1"
    assert not store.begin_run("r1")  # another process has it
    assert other.begin_run("r1")  # its own
    store.add_run(run_id="old", runbook="x", target="-", mode="live", actor="a", params={}, status="queued")
    assert store.claim_run("live", ["x"], 0) is None  # queued by an older agent: its own to run
    assert store.begin_run("old")
    _queue(store, "r2")
    taken = store.claim_run("live", ["x"], 0)
    assert taken.run_id == "r2" and store.unclaim(taken)  # taken as the agent began to stop: put back
    assert store.run("r2")["status"] == "queued"
    taken = store.claim_run("live", ["x"], 0)
    assert store.interrupt_own("r2") and store.run("r2")["status"] == "interrupted"
    assert not other.interrupt_own("old")  # not its run
