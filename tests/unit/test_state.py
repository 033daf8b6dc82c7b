"""The state store: versioned migrations, private files, intake in one transaction, retention."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from agent.state import SCHEMA_VERSION, StateStore

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


def test_a_loose_state_directory_of_an_older_version_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    (directory / "state.sqlite3").touch(mode=0o644)
    StateStore(directory / "state.sqlite3")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "state.sqlite3").stat().st_mode) == 0o600


def test_prune_keeps_what_is_recent_and_what_is_running(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
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
