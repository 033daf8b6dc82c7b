"""The state store (SQLite in the state directory): what was changed when, locks, circuit breakers, pause.

Shared by every process on the host, so limits hold across CLI runs and the daemon alike."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Breaker", "StateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, run_id TEXT NOT NULL, runbook TEXT NOT NULL,
    remediation TEXT NOT NULL, target TEXT NOT NULL, effect TEXT NOT NULL, outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_target_at ON actions (target, at);
CREATE TABLE IF NOT EXISTS locks (
    target TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS breakers (
    target TEXT PRIMARY KEY, opened REAL NOT NULL, until REAL NOT NULL, run_id TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    run_id TEXT NOT NULL, remediation TEXT NOT NULL, fingerprint TEXT NOT NULL, plan TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (run_id, remediation)
);
"""


@dataclass(frozen=True)
class Breaker:
    target: str
    opened: float
    until: float
    run_id: str
    reason: str


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
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE where it matters).
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self.host = socket.gethostname()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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

    def unlock(self, targets: list[str], run_id: str) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM locks WHERE target = ? AND run_id = ?", [(t, run_id) for t in targets])

    def locks(self) -> list[tuple[str, str, float]]:
        now = time.time()
        rows = self._db.execute("SELECT target, run_id, expires FROM locks WHERE expires >= ?", (now,)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # --- actions and limits ---------------------------------------------------------------------

    def record_action(
        self, *, run_id: str, runbook: str, remediation: str, target: str, effect: str, outcome: str
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO actions (at, run_id, runbook, remediation, target, effect, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), run_id, runbook, remediation, target, effect, outcome),
            )

    def runs_on_target(self, target: str, since: float) -> list[str]:
        """Distinct runs that changed a target since a time: one remediation of a service counts once."""
        rows = self._db.execute(
            "SELECT run_id, min(at) FROM actions WHERE target = ? AND at >= ? GROUP BY run_id ORDER BY 2",
            (target, since),
        ).fetchall()
        return [r[0] for r in rows]

    def last_action(self, target: str) -> float | None:
        row = self._db.execute("SELECT max(at) FROM actions WHERE target = ?", (target,)).fetchone()
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
        row = self._db.execute(
            "SELECT target, opened, until, run_id, reason FROM breakers WHERE target = ? AND until > ?",
            (target, time.time()),
        ).fetchone()
        return Breaker(*row) if row else None

    def breakers(self) -> list[Breaker]:
        rows = self._db.execute(
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
        row = self._db.execute("SELECT value, actor, at FROM flags WHERE name = 'paused'").fetchone()
        return (row[0], row[1], row[2]) if row else None

    # --- pending approvals ----------------------------------------------------------------------------

    def add_pending(self, run_id: str, remediation: str, fingerprint: str, plan: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO pending (run_id, remediation, fingerprint, plan, at) VALUES (?, ?, ?, ?, ?)",
                (run_id, remediation, fingerprint, json.dumps(plan, default=str), time.time()),
            )

    def pending(self) -> list[tuple[str, str, str, float]]:
        rows = self._db.execute("SELECT run_id, remediation, fingerprint, at FROM pending ORDER BY at").fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]
