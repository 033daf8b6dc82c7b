"""The state store (SQLite in the state directory): what was changed when, locks, circuit breakers, pause.

Shared by every process on the host, so limits hold across CLI runs and the daemon alike."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.files import private_dir, private_file

__all__ = ["SCHEMA_VERSION", "Breaker", "StateStore"]

# Migrations, in order; PRAGMA user_version says how many a database has had. Each runs in one
# transaction, so a database is never half-migrated, and two processes opening it at once do not both
# migrate. Never edit one that has shipped: add the next.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first schema (databases made before versioning have these tables and user_version 0).
    (
        """CREATE TABLE IF NOT EXISTS actions (
            id INTEGER PRIMARY KEY, at REAL NOT NULL, run_id TEXT NOT NULL, runbook TEXT NOT NULL,
            remediation TEXT NOT NULL, target TEXT NOT NULL, effect TEXT NOT NULL, outcome TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS actions_target_at ON actions (target, at)",
        """CREATE TABLE IF NOT EXISTS locks (
            target TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
            expires REAL NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS breakers (
            target TEXT PRIMARY KEY, opened REAL NOT NULL, until REAL NOT NULL, run_id TEXT NOT NULL,
            reason TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS flags (
            name TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL, actor TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY, runbook TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
            mode TEXT NOT NULL, actor TEXT NOT NULL, params TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
            created REAL NOT NULL, finished REAL, result TEXT, report TEXT, alert_id INTEGER)""",
        "CREATE INDEX IF NOT EXISTS runs_target ON runs (runbook, target, created)",
        """CREATE TABLE IF NOT EXISTS alerts (
            id INTEGER PRIMARY KEY, received REAL NOT NULL, source TEXT NOT NULL, fingerprint TEXT NOT NULL,
            status TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
            runbook TEXT, target TEXT, disposition TEXT NOT NULL, run_id TEXT)""",
        """CREATE TABLE IF NOT EXISTS pending (
            run_id TEXT NOT NULL, remediation TEXT NOT NULL, fingerprint TEXT NOT NULL, plan TEXT NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (run_id, remediation))""",
    ),
    # 2: which secret params a run was given (their names only: the values are never stored); when an
    # action ended (started actions count against limits while they run); indexes for retention.
    (
        "ALTER TABLE runs ADD COLUMN secret_params TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE actions ADD COLUMN ended REAL",
        "CREATE INDEX IF NOT EXISTS alerts_received ON alerts (received)",
        "CREATE INDEX IF NOT EXISTS runs_created ON runs (created)",
    ),
    # 3: incidents, their timeline, the escalation levels reached, and the notification outbox.
    (
        """CREATE TABLE incidents (
            id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, runbook TEXT, target TEXT NOT NULL,
            service TEXT NOT NULL, severity TEXT NOT NULL, impact TEXT NOT NULL, status TEXT NOT NULL,
            commander TEXT, source TEXT NOT NULL, detected REAL NOT NULL, declared REAL NOT NULL,
            acknowledged REAL, identified REAL, mitigated REAL, resolved REAL, response_missed REAL,
            resolution_missed REAL, episode REAL NOT NULL, life INTEGER NOT NULL, updated REAL NOT NULL)""",
        "CREATE INDEX incidents_key ON incidents (runbook, target, declared)",
        "CREATE INDEX incidents_status ON incidents (status)",
        # One open incident per runbook and target, whatever the number of processes or threads.
        "CREATE UNIQUE INDEX incidents_one_open ON incidents (runbook, target) WHERE status <> 'resolved'",
        """CREATE TABLE incident_events (
            id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
            actor TEXT NOT NULL, run_id TEXT, detail TEXT NOT NULL)""",
        "CREATE INDEX incident_events_incident ON incident_events (incident_id, at)",
        """CREATE TABLE escalations (
            incident_id INTEGER NOT NULL, life INTEGER NOT NULL, level INTEGER NOT NULL, round INTEGER NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (incident_id, life, level, round))""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY, incident_id INTEGER, event_key TEXT NOT NULL, channel TEXT NOT NULL,
            event TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
            last_error TEXT, sent REAL, claim TEXT, UNIQUE (event_key, channel))""",
        "CREATE INDEX outbox_due ON outbox (status, channel, next_attempt)",
    ),
    # 4: the alert that started a run, found by the run (its labels are what a remediation silences).
    ("CREATE INDEX alerts_run_started ON alerts (run_id) WHERE disposition = 'run_started'",),
)
SCHEMA_VERSION = len(_MIGRATIONS)


_INSERT_RUN = (
    "INSERT INTO runs (run_id, runbook, target, status, mode, actor, params, secret_params, host, pid, created)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Breaker:
    target: str
    opened: float
    until: float
    run_id: str
    reason: str


class _Rows:
    """Rows read under the store's lock, with the cursor methods the store uses."""

    def __init__(self, rows: list[Any], description: Any) -> None:
        self._rows, self.description = rows, description

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # The state names targets, holds plans and approvals: private. SQLite gives its -wal and -shm
        # files the database file's own mode.
        private_dir(path.parent, tighten=True)
        private_file(path)
        for side in ("-wal", "-shm"):
            if path.with_name(path.name + side).exists():
                private_file(path.with_name(path.name + side))
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE where it matters).
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        # One connection shared by the daemon's threads: every use goes through this lock.
        self._lock = threading.RLock()
        self._savepoints = 0  # the depth of nested writes (each a savepoint)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._wal()
        self._migrate()
        self.host = socket.gethostname()

    def _wal(self) -> None:
        """Switch a new store to WAL. Two processes opening a new store at once both try, and SQLite
        answers the one that finds the other mid-switch "database is locked" at once, without waiting
        on the busy timeout: try again, as the timeout would have, for up to 30 s."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        if self._version() >= SCHEMA_VERSION:
            return
        with self._write() as db:
            version = self._version()  # again, under the write lock: another process may have migrated
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[number - 1]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): for the stores built on this one (incidents, outbox)."""
        with self._write() as db:
            yield db

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read, materialised under the store's lock."""
        return list(self._read(sql, args).fetchall())

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db.in_transaction:
                # Nested in a write of this same thread (the lock is ours): part of that transaction, under a
                # savepoint, so a nested write that fails leaves nothing half-written in the outer one.
                self._savepoints += 1
                name = f"nested_{self._savepoints}"
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._savepoints -= 1
                self._db.execute(f"RELEASE {name}")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> _Rows:
        with self._lock:
            cur = self._db.execute(sql, args)
            # Materialise under the lock; callers iterate after it is released.
            rows = cur.fetchall()
            description = cur.description
        return _Rows(rows, description)

    # --- locks -------------------------------------------------------------------------------

    def lock(self, targets: list[str], run_id: str, ttl: float) -> str | None:
        """Take every target's lock or none. Returns None, or a description of who holds one.
        A lock whose holder died on this host, or whose time ran out, is taken over."""
        now = time.time()
        with self._write() as db:
            for target in targets:
                row = db.execute("SELECT run_id, host, pid, expires FROM locks WHERE target = ?", (target,)).fetchone()
                if row is None or row[0] == run_id:
                    continue
                stale = row[3] < now or (row[1] == self.host and not _alive(row[2]))
                if not stale:
                    return f"{target} is locked by run {row[0]} (pid {row[2]} on {row[1]})"
            db.executemany(
                "INSERT OR REPLACE INTO locks (target, run_id, host, pid, expires) VALUES (?, ?, ?, ?, ?)",
                [(t, run_id, self.host, os.getpid(), now + ttl) for t in targets],
            )
        return None

    def renew(self, targets: list[str], run_id: str, ttl: float) -> bool:
        """Push the run's locks' expiry on while it works; False if one is no longer the run's."""
        with self._write() as db:
            changed = db.executemany(
                "UPDATE locks SET expires = ? WHERE target = ? AND run_id = ?",
                [(time.time() + ttl, t, run_id) for t in targets],
            ).rowcount
        return changed == len(targets)

    def unlock(self, targets: list[str], run_id: str) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM locks WHERE target = ? AND run_id = ?", [(t, run_id) for t in targets])

    def locks(self) -> list[tuple[str, str, float]]:
        now = time.time()
        rows = self._read("SELECT target, run_id, expires FROM locks WHERE expires >= ?", (now,)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # --- actions and limits ---------------------------------------------------------------------

    def start_action(self, *, run_id: str, runbook: str, remediation: str, target: str, effect: str) -> int:
        """Record a change as it starts, so limits and cooldowns see work in flight (and a change whose
        process died mid-apply still counts)."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO actions (at, run_id, runbook, remediation, target, effect, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?, 'started')",
                (time.time(), run_id, runbook, remediation, target, effect),
            )
            return int(cur.lastrowid or 0)

    def finish_action(self, action_id: int, outcome: str) -> None:
        with self._write() as db:
            db.execute("UPDATE actions SET outcome = ?, ended = ? WHERE id = ?", (outcome, time.time(), action_id))

    def actions(self, target: str) -> list[tuple[str, str, str]]:
        """(run_id, effect, outcome) of a target's recorded changes, oldest first."""
        rows = self._read("SELECT run_id, effect, outcome FROM actions WHERE target = ? ORDER BY id", (target,))
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]

    def runs_on_target(self, target: str, since: float) -> list[str]:
        """Distinct runs that changed a target since a time: one remediation of a service counts once."""
        rows = self._read(
            "SELECT run_id, min(at) FROM actions WHERE target = ? AND at >= ? GROUP BY run_id ORDER BY 2",
            (target, since),
        ).fetchall()
        return [r[0] for r in rows]

    def last_action(self, target: str) -> float | None:
        row = self._read("SELECT max(at) FROM actions WHERE target = ?", (target,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    # --- circuit breakers ---------------------------------------------------------------------------

    def open_breaker(self, target: str, run_id: str, reason: str, window: float) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO breakers (target, opened, until, run_id, reason) VALUES (?, ?, ?, ?, ?)",
                (target, now, now + window, run_id, reason),
            )

    def breaker(self, target: str) -> Breaker | None:
        row = self._read(
            "SELECT target, opened, until, run_id, reason FROM breakers WHERE target = ? AND until > ?",
            (target, time.time()),
        ).fetchone()
        return Breaker(*row) if row else None

    def breakers(self) -> list[Breaker]:
        rows = self._read(
            "SELECT target, opened, until, run_id, reason FROM breakers WHERE until > ? ORDER BY opened", (time.time(),)
        ).fetchall()
        return [Breaker(*r) for r in rows]

    def reset_breaker(self, target: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM breakers WHERE target = ?", (target,)).rowcount > 0

    # --- global pause ----------------------------------------------------------------------------

    def set_paused(self, paused: bool, actor: str, reason: str = "") -> None:
        with self._write() as db:
            if paused:
                db.execute(
                    "INSERT OR REPLACE INTO flags (name, value, at, actor) VALUES ('paused', ?, ?, ?)",
                    (reason or "paused", time.time(), actor),
                )
            else:
                db.execute("DELETE FROM flags WHERE name = 'paused'")

    def paused(self) -> tuple[str, str, float] | None:
        """(reason, actor, since) while remediation is paused."""
        row = self._read("SELECT value, actor, at FROM flags WHERE name = 'paused'").fetchone()
        return (row[0], row[1], row[2]) if row else None

    # --- pending approvals ----------------------------------------------------------------------------

    def add_pending(self, run_id: str, remediation: str, fingerprint: str, plan: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO pending (run_id, remediation, fingerprint, plan, at) VALUES (?, ?, ?, ?, ?)",
                (run_id, remediation, fingerprint, json.dumps(plan, default=str), time.time()),
            )

    def pending(self, run_id: str | None = None) -> list[tuple[str, str, str, float]]:
        rows = self._read(
            "SELECT run_id, remediation, fingerprint, at FROM pending WHERE ? IS NULL OR run_id = ? ORDER BY at",
            (run_id, run_id),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def take_pending(self, run_id: str, remediation: str) -> bool:
        """Remove a pending approval; False if it was not (or no longer) pending: decided once only."""
        with self._write() as db:
            return (
                db.execute("DELETE FROM pending WHERE run_id = ? AND remediation = ?", (run_id, remediation)).rowcount
                > 0
            )

    # --- runs ----------------------------------------------------------------------------------------

    def add_run(
        self,
        *,
        run_id: str,
        runbook: str,
        target: str,
        mode: str,
        actor: str,
        params: dict[str, Any],
        status: str = "running",
        secret_params: list[str] | None = None,
    ) -> None:
        """Record a run. `params` are its overrides in clear; `secret_params` only names those given but
        not stored (an approval of the run must be given them again)."""
        with self._write() as db:
            db.execute(_INSERT_RUN, self._run_row(run_id, runbook, target, status, mode, actor, params, secret_params))

    def _run_row(
        self,
        run_id: str,
        runbook: str,
        target: str,
        status: str,
        mode: str,
        actor: str,
        params: dict[str, Any],
        secret_params: list[str] | None,
    ) -> tuple[Any, ...]:
        return (
            run_id,
            runbook,
            target,
            status,
            mode,
            actor,
            json.dumps(params, default=str),
            json.dumps(sorted(secret_params or [])),
            self.host,
            os.getpid(),
            time.time(),
        )

    def set_run(
        self, run_id: str, status: str, *, result: str | None = None, report: dict[str, Any] | None = None
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status = ?, pid = ?, result = coalesce(?, result), report = coalesce(?, report),"
                " finished = CASE WHEN ? IN ('finished', 'interrupted') THEN ? ELSE finished END WHERE run_id = ?",
                (
                    status,
                    os.getpid(),
                    result,
                    json.dumps(report, default=str) if report is not None else None,
                    status,
                    time.time(),
                    run_id,
                ),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.runs(run_id=run_id)
        return rows[0] if rows else None

    def runs(self, *, status: str | None = None, run_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._read(
            "SELECT run_id, runbook, target, status, mode, actor, params, secret_params, created, finished, result,"
            " report FROM runs WHERE (? IS NULL OR status = ?) AND (? IS NULL OR run_id = ?)"
            " ORDER BY created DESC LIMIT ?",
            (status, status, run_id, run_id, limit),
        )
        keys = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            item = dict(zip(keys, row, strict=True))
            item["params"] = json.loads(item["params"])
            item["secret_params"] = json.loads(item["secret_params"])
            item["report"] = json.loads(item["report"]) if item["report"] else None
            out.append(item)
        return out

    def active_run(self, runbook: str, target: str) -> str | None:
        row = self._read(
            "SELECT run_id FROM runs WHERE runbook = ? AND target = ? AND status IN ('queued', 'running')"
            " ORDER BY created DESC LIMIT 1",
            (runbook, target),
        ).fetchone()
        return str(row[0]) if row else None

    def recent_run(self, runbook: str, target: str, since: float) -> str | None:
        """A run for this incident since `since`, not counting runs before the incident last resolved."""
        resolved = self._read("SELECT at FROM flags WHERE name = ?", (f"resolved:{runbook}:{target}",)).fetchone()
        if resolved:
            since = max(since, float(resolved[0]))
        row = self._read(
            "SELECT run_id FROM runs WHERE runbook = ? AND target = ? AND created >= ? ORDER BY created DESC LIMIT 1",
            (runbook, target, since),
        ).fetchone()
        return str(row[0]) if row else None

    def interrupt_orphans(self) -> list[str]:
        """Runs left queued or running by a process of this host that is gone (kill -9, a crash)."""
        rows = self._read(
            "SELECT run_id, pid FROM runs WHERE status IN ('queued', 'running') AND host = ?", (self.host,)
        ).fetchall()
        orphans = [r[0] for r in rows if r[1] == os.getpid() or not _alive(r[1])]
        for run_id in orphans:
            self.set_run(run_id, "interrupted", result="interrupted")
        return orphans

    # --- alerts ---------------------------------------------------------------------------------------

    def record_intake(
        self,
        alerts: list[dict[str, Any]],
        runs: list[dict[str, Any]],
        resolved: list[tuple[str, str]],
    ) -> None:
        """One payload's alerts, the runs they start (queued) and the incidents they resolve, in one
        transaction: all of it is recorded, or none (a storm of 10,000 alerts is one write)."""
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO alerts (received, source, fingerprint, status, name, labels, annotations, runbook, target,"
                " disposition, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        now,
                        a["source"],
                        a["fingerprint"],
                        a["status"],
                        a["name"],
                        json.dumps(a["labels"]),
                        json.dumps(a["annotations"]),
                        a["runbook"],
                        a["target"],
                        a["disposition"],
                        a["run_id"],
                    )
                    for a in alerts
                ],
            )
            db.executemany(
                _INSERT_RUN,
                [
                    self._run_row(
                        r["run_id"], r["runbook"], r["target"], "queued", r["mode"], r["actor"], r["params"], []
                    )
                    for r in runs
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO flags (name, value, at, actor) VALUES (?, 'resolved', ?, 'alert')",
                [(f"resolved:{runbook}:{target}", now) for runbook, target in resolved],
            )

    def run_alert(self, run_id: str) -> dict[str, Any] | None:
        """The alert that started a run (its source, name and labels), if an alert did and it is kept."""
        row = self._read(
            "SELECT source, name, labels FROM alerts WHERE run_id = ? AND disposition = 'run_started'"
            " ORDER BY id LIMIT 1",
            (run_id,),
        ).fetchone()
        return {"source": row[0], "name": row[1], "labels": json.loads(row[2])} if row else None

    def alert_count(self) -> int:
        return int(self._read("SELECT count(*) FROM alerts").fetchone()[0])

    # --- retention --------------------------------------------------------------------------------------

    def prune(self, *, alerts_before: float, runs_before: float, actions_before: float) -> dict[str, int]:
        """Delete what is past its retention: alerts, finished runs (with their pending approvals), actions
        older than any limit window, expired locks, breakers and incident marks, resolved incidents (with
        their timeline, pages and messages) and delivered messages. The audit log, the record, is never
        pruned here."""
        now = time.time()
        with self._write() as db:
            counts = {
                "alerts": db.execute("DELETE FROM alerts WHERE received < ?", (alerts_before,)).rowcount,
                "pending": db.execute(
                    "DELETE FROM pending WHERE run_id IN (SELECT run_id FROM runs WHERE created < ?"
                    " AND status IN ('finished', 'interrupted'))",
                    (runs_before,),
                ).rowcount,
                "runs": db.execute(
                    "DELETE FROM runs WHERE created < ? AND status IN ('finished', 'interrupted')", (runs_before,)
                ).rowcount,
                "actions": db.execute("DELETE FROM actions WHERE at < ?", (actions_before,)).rowcount,
                "breakers": db.execute("DELETE FROM breakers WHERE until < ?", (now,)).rowcount,
                "locks": db.execute("DELETE FROM locks WHERE expires < ?", (now,)).rowcount,
                "incident_marks": db.execute(
                    "DELETE FROM flags WHERE name LIKE 'resolved:%' AND at < ?", (runs_before,)
                ).rowcount,
                # Incidents resolved before the runs' cutoff go with their timeline, pages and messages;
                # messages delivered (or given up on) go with the alerts' cutoff. Open ones stay.
                "notifications": db.execute(
                    "DELETE FROM outbox WHERE (status <> 'pending' AND created < ?) OR incident_id IN"
                    " (SELECT id FROM incidents WHERE status = 'resolved' AND resolved < ?)",
                    (alerts_before, runs_before),
                ).rowcount,
            }
            counts["incident_events"] = db.execute(
                "DELETE FROM incident_events WHERE incident_id IN"
                " (SELECT id FROM incidents WHERE status = 'resolved' AND resolved < ?)",
                (runs_before,),
            ).rowcount
            db.execute(
                "DELETE FROM escalations WHERE incident_id IN"
                " (SELECT id FROM incidents WHERE status = 'resolved' AND resolved < ?)",
                (runs_before,),
            )
            counts["incidents"] = db.execute(
                "DELETE FROM incidents WHERE status = 'resolved' AND resolved < ?", (runs_before,)
            ).rowcount
        return counts
