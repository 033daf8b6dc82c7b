"""The state store: what was changed when, locks, circuit breakers, pause, runs, alerts, incidents, agents.

SQLite in the state directory by default, shared by every process on the host, so limits hold across CLI
runs and the daemon alike; PostgreSQL (`state_url`) when several agents share it (agent.state_db)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.exceptions import StateUnavailable
from agent.state_db import Db, PostgresBackend, SqliteBackend

__all__ = ["POSTGRES_SCHEMES", "SCHEMA_VERSION", "Agent", "Breaker", "Db", "StateStore", "StateUnavailable"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

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
    # 5: the agents (daemons) sharing this state, with their heartbeats.
    (
        """CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, version TEXT NOT NULL,
            started REAL NOT NULL, heartbeat REAL NOT NULL, stopped REAL)""",
        "CREATE INDEX agents_process ON agents (host, pid)",
    ),
    # 6: the agent (daemon) a run belongs to: a lost agent's runs are found by it, not by a pid.
    ("ALTER TABLE runs ADD COLUMN agent TEXT", "CREATE INDEX runs_agent ON runs (agent) WHERE agent IS NOT NULL"),
    # 7: the run queue, shared by the agents: a queued run's origin (for its incident), found oldest first.
    ("ALTER TABLE runs ADD COLUMN origin TEXT", "CREATE INDEX runs_queued ON runs (created) WHERE status = 'queued'"),
    # 8: what an agent can take from the queue (its mode), and that it is stopping (it takes nothing more).
    ("ALTER TABLE agents ADD COLUMN mode TEXT", "ALTER TABLE agents ADD COLUMN stopping REAL"),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# PostgreSQL's schema, versioned on its own (a schema_version table): the SQLite schema as of its
# migration 5 was its first. The same tables and columns, in PostgreSQL's types; never edit one that has
# shipped: add the next.
_PG_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE actions (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL,
            run_id TEXT NOT NULL, runbook TEXT NOT NULL, remediation TEXT NOT NULL, target TEXT NOT NULL,
            effect TEXT NOT NULL, outcome TEXT NOT NULL, ended DOUBLE PRECISION)""",
        "CREATE INDEX actions_target_at ON actions (target, at)",
        """CREATE TABLE locks (
            target TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
            expires DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE breakers (
            target TEXT PRIMARY KEY, opened DOUBLE PRECISION NOT NULL, until DOUBLE PRECISION NOT NULL,
            run_id TEXT NOT NULL, reason TEXT NOT NULL)""",
        """CREATE TABLE flags (
            name TEXT PRIMARY KEY, value TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL)""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, runbook TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
            mode TEXT NOT NULL, actor TEXT NOT NULL, params TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
            created DOUBLE PRECISION NOT NULL, finished DOUBLE PRECISION, result TEXT, report TEXT,
            alert_id BIGINT, secret_params TEXT NOT NULL DEFAULT '[]')""",
        "CREATE INDEX runs_target ON runs (runbook, target, created)",
        "CREATE INDEX runs_created ON runs (created)",
        "CREATE INDEX runs_active ON runs (host, pid) WHERE status IN ('queued', 'running')",
        """CREATE TABLE alerts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, received DOUBLE PRECISION NOT NULL,
            source TEXT NOT NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL, name TEXT NOT NULL,
            labels TEXT NOT NULL, annotations TEXT NOT NULL, runbook TEXT, target TEXT, disposition TEXT NOT NULL,
            run_id TEXT)""",
        "CREATE INDEX alerts_received ON alerts (received)",
        "CREATE INDEX alerts_run_started ON alerts (run_id) WHERE disposition = 'run_started'",
        """CREATE TABLE pending (
            run_id TEXT NOT NULL, remediation TEXT NOT NULL, fingerprint TEXT NOT NULL, plan TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, remediation))""",
        """CREATE TABLE incidents (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, title TEXT NOT NULL, runbook TEXT,
            target TEXT NOT NULL, service TEXT NOT NULL, severity TEXT NOT NULL, impact TEXT NOT NULL,
            status TEXT NOT NULL, commander TEXT, source TEXT NOT NULL, detected DOUBLE PRECISION NOT NULL,
            declared DOUBLE PRECISION NOT NULL, acknowledged DOUBLE PRECISION, identified DOUBLE PRECISION,
            mitigated DOUBLE PRECISION, resolved DOUBLE PRECISION, response_missed DOUBLE PRECISION,
            resolution_missed DOUBLE PRECISION, episode DOUBLE PRECISION NOT NULL, life INTEGER NOT NULL,
            updated DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX incidents_key ON incidents (runbook, target, declared)",
        "CREATE INDEX incidents_status ON incidents (status)",
        "CREATE UNIQUE INDEX incidents_one_open ON incidents (runbook, target) WHERE status <> 'resolved'",
        """CREATE TABLE incident_events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, incident_id BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, run_id TEXT,
            detail TEXT NOT NULL)""",
        "CREATE INDEX incident_events_incident ON incident_events (incident_id, at)",
        """CREATE TABLE escalations (
            incident_id BIGINT NOT NULL, life INTEGER NOT NULL, level INTEGER NOT NULL, round INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL, PRIMARY KEY (incident_id, life, level, round))""",
        """CREATE TABLE outbox (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, incident_id BIGINT, event_key TEXT NOT NULL,
            channel TEXT NOT NULL, event TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt DOUBLE PRECISION NOT NULL, last_error TEXT, sent DOUBLE PRECISION, claim TEXT,
            UNIQUE (event_key, channel))""",
        "CREATE INDEX outbox_due ON outbox (status, channel, next_attempt)",
        """CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, version TEXT NOT NULL,
            started DOUBLE PRECISION NOT NULL, heartbeat DOUBLE PRECISION NOT NULL, stopped DOUBLE PRECISION)""",
        "CREATE INDEX agents_process ON agents (host, pid)",
    ),
    # 2: as SQLite's 6.
    ("ALTER TABLE runs ADD COLUMN agent TEXT", "CREATE INDEX runs_agent ON runs (agent) WHERE agent IS NOT NULL"),
    # 3: as SQLite's 7.
    ("ALTER TABLE runs ADD COLUMN origin TEXT", "CREATE INDEX runs_queued ON runs (created) WHERE status = 'queued'"),
    # 4: as SQLite's 8.
    ("ALTER TABLE agents ADD COLUMN mode TEXT", "ALTER TABLE agents ADD COLUMN stopping DOUBLE PRECISION"),
)


_FLAG_UPSERT = " ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at, actor = excluded.actor"

_INSERT_RUN = (
    "INSERT INTO runs (run_id, runbook, target, status, mode, actor, params, secret_params, host, pid, created,"
    " agent, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class QueuedRun:
    """A run taken from the queue: what its worker needs to run it and tell its incident."""

    run_id: str
    runbook: str
    target: str
    actor: str
    params: dict[str, Any]
    origin: dict[str, Any]
    queued_by: str | None


def _queued_run(row: tuple[Any, ...]) -> QueuedRun:
    return QueuedRun(
        run_id=row[0],
        runbook=row[1],
        target=row[2],
        actor=row[3],
        params=json.loads(row[4]),
        origin=json.loads(row[5]) if row[5] else {},
        queued_by=row[6],
    )


@dataclass(frozen=True)
class Agent:
    """A daemon sharing this state: where it runs, since when, and its last sign of life."""

    agent_id: str
    host: str
    pid: int
    version: str
    started: float
    heartbeat: float
    stopped: float | None
    mode: str | None = None  # the runs it takes from the queue: live or dry-run
    stopping: float | None = None  # since when it takes nothing more from the queue


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


def process_host() -> str:
    """Where a pid means something: the hostname, and the pid namespace. Containers sharing a hostname
    (or the host's network) have pid namespaces of their own, so a pid read in one says nothing of a
    process in another: their locks and runs are never judged dead by a pid looked up here."""
    name = socket.gethostname()
    try:
        return f"{name}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def _run_of(holder: str) -> str:
    """The run a lock's holder belongs to (`RUN:ATTEMPT`, or a bare run id)."""
    return holder.partition(":")[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateStore:
    """Runs, alerts, locks, limits, breakers, approvals, incidents and agents: in SQLite at `location` (a
    path), or in PostgreSQL when `location` is a postgresql:// URL (agent.state_db)."""

    def __init__(self, location: Path | str) -> None:
        self.backend: SqliteBackend | PostgresBackend
        if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
            self.backend = PostgresBackend(location)
            self.path: Path | None = None
            self.backend.migrate(_PG_MIGRATIONS)
        else:
            self.path = Path(location)
            self.backend = SqliteBackend(self.path)
            self.backend.migrate(_MIGRATIONS)
        # FOR UPDATE SKIP LOCKED where the database has it: a claim passes over rows another agent holds.
        self.skip_locked = self.backend.skip_locked
        self.host = process_host()
        # The daemon this store is used by (None: a CLI process): its runs are marked as its own.
        self.agent_id: str | None = None

    def _version(self) -> int:
        return self.backend.version()

    def close(self) -> None:
        self.backend.close()

    @contextmanager
    def write(self, *, serialize: bool = True) -> Iterator[Db]:
        """One write transaction (nested: a savepoint of the outer one): for the stores built on this one
        (incidents, outbox). `serialize=False` only for a claim that locks its rows itself (SKIP LOCKED)."""
        with self.backend.transaction(serialize) as db:
            yield db

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read, materialised under the store's lock."""
        return list(self._read(sql, args).fetchall())

    def _write(self) -> AbstractContextManager[Db]:
        return self.backend.transaction()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> _Rows:
        rows, description = self.backend.read(sql, args)
        return _Rows(rows, description)

    # --- locks -------------------------------------------------------------------------------

    def lock(self, targets: list[str], run_id: str, ttl: float) -> str | None:
        """Take every target's lock or none. Returns None, or a description of who holds one.
        A lock whose holder died on this host, or whose time ran out, is taken over. `run_id` is the
        holder: a run's id, or `RUN:ATTEMPT` for one attempt of the run (shown as the run)."""
        with self._write() as db:
            now = self.backend.now(db)
            for target in targets:
                row = db.execute("SELECT run_id, host, pid, expires FROM locks WHERE target = ?", (target,)).fetchone()
                if row is None or row[0] == run_id:
                    continue
                stale = row[3] < now or (row[1] == self.host and not _alive(row[2]))
                if not stale:
                    return f"{target} is locked by run {_run_of(row[0])} (pid {row[2]} on {row[1]})"
            db.executemany(
                "INSERT INTO locks (target, run_id, host, pid, expires) VALUES (?, ?, ?, ?, ?) ON CONFLICT (target)"
                " DO UPDATE SET run_id = excluded.run_id, host = excluded.host, pid = excluded.pid,"
                " expires = excluded.expires",
                [(t, run_id, self.host, os.getpid(), now + ttl) for t in targets],
            )
        return None

    def renew(self, targets: list[str], run_id: str, ttl: float) -> bool:
        """Push the run's locks' expiry on while it works; False if one is no longer the run's."""
        with self._write() as db:
            now = self.backend.now(db)
            changed = db.executemany(
                "UPDATE locks SET expires = ? WHERE target = ? AND run_id = ?",
                [(now + ttl, t, run_id) for t in targets],
            ).rowcount
        return changed == len(targets)

    def unlock(self, targets: list[str], run_id: str) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM locks WHERE target = ? AND run_id = ?", [(t, run_id) for t in targets])

    def locks(self) -> list[tuple[str, str, float]]:
        rows = self._read("SELECT target, run_id, expires FROM locks WHERE expires >= ?", (self.now(),)).fetchall()
        return [(r[0], _run_of(r[1]), r[2]) for r in rows]

    # --- actions and limits ---------------------------------------------------------------------

    def start_action(self, *, run_id: str, runbook: str, remediation: str, target: str, effect: str) -> int:
        """Record a change as it starts, so limits and cooldowns see work in flight (and a change whose
        process died mid-apply still counts)."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO actions (at, run_id, runbook, remediation, target, effect, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?, 'started') RETURNING id",
                (time.time(), run_id, runbook, remediation, target, effect),
            )
            return int(cur.fetchone()[0])

    def finish_action(self, action_id: int, outcome: str) -> None:
        with self._write() as db:
            db.execute("UPDATE actions SET outcome = ?, ended = ? WHERE id = ?", (outcome, time.time(), action_id))

    def actions(self, target: str) -> list[tuple[str, str, str]]:
        """(run_id, effect, outcome) of a target's recorded changes, oldest first."""
        rows = self._read("SELECT run_id, effect, outcome FROM actions WHERE target = ? ORDER BY id", (target,))
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]

    def targets_changed_by(self, run_id: str) -> set[str]:
        """Every target a run has changed (or begun to): its blast radius so far."""
        return {r[0] for r in self._read("SELECT DISTINCT target FROM actions WHERE run_id = ?", (run_id,)).fetchall()}

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
                "INSERT INTO breakers (target, opened, until, run_id, reason) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (target) DO UPDATE SET opened = excluded.opened, until = excluded.until,"
                " run_id = excluded.run_id, reason = excluded.reason",
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
                    "INSERT INTO flags (name, value, at, actor) VALUES ('paused', ?, ?, ?)" + _FLAG_UPSERT,
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
                "INSERT INTO pending (run_id, remediation, fingerprint, plan, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, remediation) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " plan = excluded.plan, at = excluded.at",
                (run_id, remediation, fingerprint, json.dumps(plan, default=str), time.time()),
            )

    def pending(self, run_id: str | None = None) -> list[tuple[str, str, str, float]]:
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        rows = self._read(
            f"SELECT run_id, remediation, fingerprint, at FROM pending {where} ORDER BY at", args
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def pending_plans(self, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """A run's pending approvals with their plans: (remediation, fingerprint, plan), as a person sees them."""
        rows = self._read(
            "SELECT remediation, fingerprint, plan FROM pending WHERE run_id = ? ORDER BY at", (run_id,)
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def take_pending(self, run_id: str, remediation: str) -> bool:
        """Remove a pending approval; False if it was not (or no longer) pending: decided once only."""
        return self._changed("DELETE FROM pending WHERE run_id = ? AND remediation = ?", (run_id, remediation))

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
        origin: dict[str, Any] | None = None,
    ) -> None:
        """Record a run. `params` are its overrides in clear; `secret_params` only names those given but
        not stored (an approval of the run must be given them again). A queued run's `origin` is what its
        incident needs to know of where it came from, for whichever agent takes it."""
        with self._write() as db:
            db.execute(
                _INSERT_RUN, self._run_row(run_id, runbook, target, status, mode, actor, params, secret_params, origin)
            )

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
        origin: dict[str, Any] | None = None,
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
            self.agent_id,
            json.dumps(origin, default=str) if origin is not None else None,
        )

    def set_run(
        self, run_id: str, status: str, *, result: str | None = None, report: dict[str, Any] | None = None
    ) -> None:
        # The process that sets a run running (it starts it, or goes on with it after an approval given
        # there) is its owner from then on; a report or an end written by another leaves the owner be.
        owner = ", host = ?, pid = ?, agent = ?" if status == "running" else ""
        with self._write() as db:
            db.execute(
                f"UPDATE runs SET status = ?{owner}, result = coalesce(?, result), report = coalesce(?, report),"
                " finished = CASE WHEN ? IN ('finished', 'interrupted') THEN ? ELSE finished END WHERE run_id = ?",
                (
                    status,
                    *((self.host, os.getpid(), self.agent_id) if owner else ()),
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
        # Conditions only for what is asked: PostgreSQL cannot type a bare `? IS NULL`.
        asked = {"status": status, "run_id": run_id}
        where = " AND ".join(f"{name} = ?" for name, value in asked.items() if value is not None) or "TRUE"
        cur = self._read(
            "SELECT run_id, runbook, target, status, mode, actor, params, secret_params, created, finished, result,"
            f" report FROM runs WHERE {where} ORDER BY created DESC LIMIT ?",
            (*(value for value in asked.values() if value is not None), limit),
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
        """Runs left running by a process of this host that is gone (kill -9, a crash). (Its queued runs
        never began: they stay in the queue, for the next agent to take while they are fresh.)"""
        rows = self._read(
            # (A queued run without an origin was queued by an older agent, in its own memory: gone with it.)
            "SELECT run_id, pid FROM runs WHERE (status = 'running' OR (status = 'queued' AND origin IS NULL))"
            " AND host = ?",
            (self.host,),
        ).fetchall()
        orphans = [r[0] for r in rows if r[1] == os.getpid() or not _alive(r[1])]
        for run_id in orphans:
            self.set_run(run_id, "interrupted", result="interrupted")
        return orphans

    # --- the run queue, shared by the agents -------------------------------------------------------------
    # A queued run is one a daemon of this version queued (it has an origin: an older agent keeps its own
    # runs in memory, and would run them itself), of one mode (a dry-run agent never takes a live run).

    def queued_count(self, mode: str, since: float) -> int:
        """Runs waiting in the queue since `since`, of every agent (those of `mode`: live or dry-run)."""
        row = self._read(
            "SELECT count(*) FROM runs WHERE status = 'queued' AND origin IS NOT NULL AND mode = ? AND created >= ?",
            (mode, since),
        ).fetchone()
        return int(row[0])

    def claim_run(self, mode: str, runbooks: Collection[str], since: float) -> QueuedRun | None:
        """Take the oldest queued run of `mode` for one of `runbooks` queued after `since`, whichever agent
        queued it, and make it this agent's running run: one agent takes each (SKIP LOCKED on
        PostgreSQL: agents claiming at once take different runs, none waits on another's)."""
        if not runbooks:
            return None
        names = sorted(runbooks)
        where = (
            "status = 'queued' AND origin IS NOT NULL AND mode = ? AND created >= ?"
            f" AND runbook IN ({', '.join('?' * len(names))})"
        )
        args = (mode, since, *names)
        # A read first: an idle worker looks often, and a look at a queue with nothing for it takes no lock.
        if self._read(f"SELECT 1 FROM runs WHERE {where} LIMIT 1", args).fetchone() is None:
            return None
        with self.write(serialize=False) as db:
            row = db.execute(
                f"SELECT run_id, runbook, target, actor, params, origin, agent FROM runs WHERE {where}"
                " ORDER BY created LIMIT 1" + self.skip_locked,
                args,
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', host = ?, pid = ?, agent = ? WHERE run_id = ?",
                (self.host, os.getpid(), self.agent_id, row[0]),
            )
        return _queued_run(row)

    def unclaim(self, run: QueuedRun) -> bool:
        """Put back a run this agent took but did not begin (it is stopping): queued again, its queuer's."""
        return self._changed(
            "UPDATE runs SET status = 'queued', agent = ? WHERE run_id = ? AND status = 'running' AND agent = ?",
            (run.queued_by, run.run_id, self.agent_id),
        )

    def begin_run(self, run_id: str) -> bool:
        """Set a recorded run running here, if it is this process's to run: queued, or already taken by it
        from the queue. False: another agent has it (or it ended), and it must not run here too."""
        return self._changed(
            "UPDATE runs SET status = 'running', host = ?, pid = ?, agent = ? WHERE run_id = ?"
            " AND (status = 'queued' OR (status = 'running' AND host = ? AND pid = ?))",
            (self.host, os.getpid(), self.agent_id, run_id, self.host, os.getpid()),
        )

    def interrupt_own(self, run_id: str) -> bool:
        """A run this process has running, ended as interrupted (it failed before it could finish)."""
        return self._changed(
            "UPDATE runs SET status = 'interrupted', result = 'error', finished = ? WHERE run_id = ?"
            " AND status = 'running' AND host = ? AND pid = ?",
            (time.time(), run_id, self.host, os.getpid()),
        )

    def _changed(self, sql: str, args: tuple[Any, ...]) -> bool:
        """One conditional write: whether it changed a row (the condition held, once)."""
        with self._write() as db:
            return db.execute(sql, args).rowcount > 0

    def interrupt_stale(self, before: float) -> list[QueuedRun]:
        """Queued runs no agent began before `before`: interrupted, once, by one agent (which tells their
        incidents)."""
        rows = self._interrupt_where(
            "SELECT run_id, runbook, target, actor, params, origin, agent FROM runs"
            " WHERE status = 'queued' AND origin IS NOT NULL AND created < ?",
            (before,),
        )
        return [_queued_run(row) for row in rows]

    def _interrupt_where(self, select: str, args: tuple[Any, ...], now: float | None = None) -> list[Any]:
        """The runs `select` finds (their run_id first), marked interrupted in the same transaction, each
        by one agent only (SKIP LOCKED on PostgreSQL); returns the rows found."""
        with self.write(serialize=False) as db:
            at = self.backend.now(db) if now is None else now
            rows = db.execute(select + self.skip_locked, args).fetchall()
            db.executemany(
                "UPDATE runs SET status = 'interrupted', result = 'interrupted', finished = ? WHERE run_id = ?",
                [(at, row[0]) for row in rows],
            )
        return list(rows)

    def interrupt_queued(self, mode: str) -> list[str]:
        """Every queued run of `mode`, interrupted: the last agent that could take them is stopping."""
        rows = self._interrupt_where(
            "SELECT run_id FROM runs WHERE status = 'queued' AND origin IS NOT NULL AND mode = ?", (mode,)
        )
        return [row[0] for row in rows]

    def agents_alive(self, dead_after: float, *, besides: str, mode: str) -> list[str]:
        """The agents other than `besides` that could take a queued run of `mode`: heartbeat fresh, that
        mode, not stopping."""
        rows = self._read(
            "SELECT agent_id FROM agents WHERE stopped IS NULL AND stopping IS NULL AND heartbeat >= ?"
            " AND agent_id <> ? AND mode = ?",
            (self.now() - dead_after, besides, mode),
        ).fetchall()
        return [row[0] for row in rows]

    def queue(self) -> tuple[int, float | None]:
        """(queued runs, when the oldest was queued) of the shared queue, for `runbook status`."""
        row = self._read(
            "SELECT count(*), min(created) FROM runs WHERE status = 'queued' AND origin IS NOT NULL"
        ).fetchone()
        return int(row[0]), (float(row[1]) if row[1] is not None else None)

    # --- agents -------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The state's clock (the database's, on PostgreSQL): heartbeats and lock expiry are read by it."""
        if self.backend.now_sql is None:
            return time.time()
        return float(self._read(self.backend.now_sql).fetchone()[0])

    def register_agent(self, agent_id: str, version: str, mode: str = "live") -> None:
        with self.write(serialize=False) as db:
            now = self.backend.now(db)
            db.execute(
                "INSERT INTO agents (agent_id, host, pid, version, started, heartbeat, mode)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (agent_id, self.host, os.getpid(), version, now, now, mode),
            )

    def agent_stopping(self, agent_id: str) -> None:
        """It takes nothing more from the queue (its running runs are still its own until it stops)."""
        with self.write(serialize=False) as db:
            db.execute("UPDATE agents SET stopping = ? WHERE agent_id = ?", (self.backend.now(db), agent_id))

    def heartbeat(self, agent_id: str) -> None:
        """One row of its own, no read first: never waits on the other agents' writes."""
        with self.write(serialize=False) as db:
            db.execute("UPDATE agents SET heartbeat = ? WHERE agent_id = ?", (self.backend.now(db), agent_id))

    def agent_stopped(self, agent_id: str) -> None:
        with self.write(serialize=False) as db:
            now = self.backend.now(db)
            db.execute("UPDATE agents SET stopped = ?, heartbeat = ? WHERE agent_id = ?", (now, now, agent_id))

    def agents(self) -> list[Agent]:
        rows = self._read(
            "SELECT agent_id, host, pid, version, started, heartbeat, stopped, mode, stopping FROM agents"
            " ORDER BY started"
        ).fetchall()
        return [Agent(*row) for row in rows]

    def held_by(self, agent: Agent) -> tuple[list[str], list[str]]:
        """(target locks, runs running) of one agent, for `runbook status` (queued runs are the queue's)."""
        locks = self._read(
            "SELECT target FROM locks WHERE expires >= ? AND host = ? AND pid = ? ORDER BY target",
            (self.now(), agent.host, agent.pid),
        ).fetchall()
        runs = self._read(
            "SELECT run_id FROM runs WHERE status = 'running' AND agent = ? ORDER BY created",
            (agent.agent_id,),
        ).fetchall()
        return [r[0] for r in locks], [r[0] for r in runs]

    def interrupt_lost(self, dead_after: float) -> list[tuple[str, str]]:
        """Runs left running by an agent that stopped (and left some) or whose heartbeat is older than
        `dead_after` (killed, its host gone), as (run_id, agent_id): marked interrupted by whichever agent
        sees it first, once (SKIP LOCKED: two survivors never both take one run). Never resumed or
        re-applied: the change it may have started stays recorded, and counts against the target's
        limits. (Its queued runs never began: they stay in the queue, for the next agent to take.)"""
        rows = self._interrupt_where(
            "SELECT run_id, agent FROM runs WHERE status = 'running' AND agent IN"
            " (SELECT agent_id FROM agents WHERE stopped IS NOT NULL OR heartbeat < ?)",
            (self.now() - dead_after,),
        )
        return [(row[0], row[1]) for row in rows]

    # --- alerts ---------------------------------------------------------------------------------------

    def record_intake(
        self,
        alerts: Iterable[dict[str, Any]],
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
                (
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
                ),
            )
            db.executemany(
                _INSERT_RUN,
                [
                    self._run_row(
                        r["run_id"],
                        r["runbook"],
                        r["target"],
                        "queued",
                        r["mode"],
                        r["actor"],
                        r["params"],
                        [],
                        r.get("origin"),
                    )
                    for r in runs
                ],
            )
            db.executemany(
                "INSERT INTO flags (name, value, at, actor) VALUES (?, 'resolved', ?, 'alert')" + _FLAG_UPSERT,
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
            counts["agents"] = db.execute("DELETE FROM agents WHERE heartbeat < ?", (alerts_before,)).rowcount
            counts["incidents"] = db.execute(
                "DELETE FROM incidents WHERE status = 'resolved' AND resolved < ?", (runs_before,)
            ).rowcount
        return counts
