"""Incidents in the state store: the record, its timeline of events, the escalation levels reached."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any

from agent.state import Db, StateStore

__all__ = ["OPEN", "Event", "Incident", "IncidentStore"]

# The guide's statuses, in order; every one but the last is open.
STATUSES = ("investigating", "identified", "monitoring", "resolved")
OPEN = STATUSES[:-1]


@dataclass(frozen=True)
class Incident:
    id: int
    title: str
    runbook: str | None
    target: str
    service: str
    severity: str
    impact: str
    status: str
    commander: str | None
    source: str  # run | person
    detected: float
    declared: float
    acknowledged: float | None
    identified: float | None
    mitigated: float | None
    resolved: float | None
    response_missed: float | None
    resolution_missed: float | None
    episode: float  # when this life of the incident began: declared, or reopened
    life: int  # 0, then one more each time it is reopened
    updated: float

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int
    at: float
    kind: str
    actor: str
    run_id: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COLUMNS = ", ".join(f.name for f in fields(Incident))


class IncidentStore:
    """SQL for incidents, on the state store's connection. Writes take the open transaction of the caller
    (`db`), so an incident change, its events, escalations and messages are one write."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, incident_id: int) -> Incident | None:
        rows = self.state.query(f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (incident_id,))
        return Incident(*rows[0]) if rows else None

    def find(
        self, *, status: str | None = None, limit: int = 100, oldest_first: bool = False, severity: str | None = None
    ) -> list[Incident]:
        if status == "open":
            where, args = f"status IN ({', '.join('?' * len(OPEN))})", tuple(OPEN)
        elif status:
            where, args = "status = ?", (status,)
        else:
            where, args = "1 = 1", ()
        if severity:
            where, args = f"{where} AND severity = ?", (*args, severity)
        order = "ASC" if oldest_first else "DESC"
        rows = self.state.query(
            f"SELECT {_COLUMNS} FROM incidents WHERE {where} ORDER BY declared {order} LIMIT ?", (*args, limit)
        )
        return [Incident(*r) for r in rows]

    def open_for(self, runbook: str, target: str) -> Incident | None:
        rows = self.state.query(
            f"SELECT {_COLUMNS} FROM incidents WHERE runbook = ? AND target = ? AND status IN"
            f" ({', '.join('?' * len(OPEN))}) ORDER BY declared DESC LIMIT 1",
            (runbook, target, *OPEN),
        )
        return Incident(*rows[0]) if rows else None

    def resolved_since(self, runbook: str, target: str, since: float) -> Incident | None:
        rows = self.state.query(
            f"SELECT {_COLUMNS} FROM incidents WHERE runbook = ? AND target = ? AND status = 'resolved'"
            " AND resolved >= ? ORDER BY resolved DESC LIMIT 1",
            (runbook, target, since),
        )
        return Incident(*rows[0]) if rows else None

    def of_run(self, run_id: str) -> Incident | None:
        rows = self.state.query(
            f"SELECT {', '.join('i.' + f.name for f in fields(Incident))} FROM incidents i"
            " JOIN incident_events e ON e.incident_id = i.id WHERE e.run_id = ? ORDER BY e.at DESC LIMIT 1",
            (run_id,),
        )
        return Incident(*rows[0]) if rows else None

    def events(self, incident_id: int, kinds: tuple[str, ...] = ()) -> list[Event]:
        where = f" AND kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
        rows = self.state.query(
            "SELECT id, incident_id, at, kind, actor, run_id, detail FROM incident_events"
            f" WHERE incident_id = ?{where} ORDER BY at, id",
            (incident_id, *kinds),
        )
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def escalations(self, incident_id: int, life: int | None) -> list[tuple[int, int, float]]:
        """(level, round, at) of the levels reached in one life of the incident (None: in all), in order."""
        where, args = (" AND life = ?", (life,)) if life is not None else ("", ())
        rows = self.state.query(
            f"SELECT level, round, at FROM escalations WHERE incident_id = ?{where} ORDER BY at, level, round",
            (incident_id, *args),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def last_event_at(self, incident_id: int, kind: str) -> float:
        rows = self.state.query(
            "SELECT max(at) FROM incident_events WHERE incident_id = ? AND kind = ?", (incident_id, kind)
        )
        return float(rows[0][0] or 0.0)

    def has_event(self, incident_id: int, kind: str, what: str) -> bool:
        # Read in Python, not with the database's JSON functions (SQLite's and PostgreSQL's differ): one
        # incident has a handful of events of a kind.
        rows = self.state.query(
            "SELECT detail FROM incident_events WHERE incident_id = ? AND kind = ?", (incident_id, kind)
        )
        return any(json.loads(row[0]).get("what") == what for row in rows)

    # --- writes (inside the caller's transaction) ------------------------------------------------------

    @staticmethod
    def insert(db: Db, values: dict[str, Any]) -> int:
        values = {**values, "updated": time.time()}
        names = ", ".join(values)
        cur = db.execute(
            f"INSERT INTO incidents ({names}) VALUES ({', '.join('?' * len(values))}) RETURNING id",
            tuple(values.values()),
        )
        return int(cur.fetchone()[0])

    @staticmethod
    def update(db: Db, incident_id: int, values: dict[str, Any]) -> None:
        values = {**values, "updated": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE incidents SET {assignments} WHERE id = ?", (*values.values(), incident_id))

    @staticmethod
    def add_event(
        db: Db,
        incident_id: int,
        kind: str,
        actor: str,
        detail: dict[str, Any],
        *,
        run_id: str | None = None,
        at: float | None = None,
    ) -> int:
        cur = db.execute(
            "INSERT INTO incident_events (incident_id, at, kind, actor, run_id, detail) VALUES (?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (incident_id, at or time.time(), kind, actor, run_id, json.dumps(detail, default=str)),
        )
        return int(cur.fetchone()[0])

    @staticmethod
    def add_escalation(db: Db, incident_id: int, life: int, level: int, round_: int) -> bool:
        """Record a level reached; False if it already was (so nobody is paged twice, even after a crash)."""
        cur = db.execute(
            "INSERT INTO escalations (incident_id, life, level, round, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (incident_id, life, level, round_, time.time()),
        )
        return cur.rowcount > 0
