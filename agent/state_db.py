"""The state store's two databases: SQLite in the state directory (the default, one host) and PostgreSQL
(`RUNBOOK_STATE_URL=postgresql://...`, shared by several agents). The store writes one SQL for both:
`?` placeholders, `ON CONFLICT` and `RETURNING` (SQLite 3.35+); what differs is here.

Writes keep SQLite's semantics on PostgreSQL: a write transaction takes one advisory lock first, as
SQLite's BEGIN IMMEDIATE takes the database's one write lock, so every read-then-write in the store (a
lock taken if free, one run per incident, a decision made once) holds across agents exactly as it holds
across processes on one host. Reads never wait on it. Claims of queued work (the notification outbox, the
runs of a lost agent) skip rows another agent holds instead (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from agent.exceptions import StateUnavailable
from agent.files import private_dir, private_file

__all__ = ["Cursor", "Db", "PostgresBackend", "SqliteBackend", "StateUnavailable"]

# Advisory lock keys (two int4s: this application, then what is locked), so they never meet another
# application's locks in a shared database.
_APP = 0x72756E62  # "runb"
_WRITE, _MIGRATE = 1, 2


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """A connection inside a write transaction, as the stores built on the state store use it."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor: ...


class SqliteBackend:
    """One SQLite file in the state directory, shared by the processes of one host."""

    name = "sqlite"
    skip_locked = ""  # one writer at a time already: nothing to skip

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
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        # One connection shared by the daemon's threads: every use goes through this lock.
        self.lock = threading.RLock()
        self._savepoints = 0  # the depth of nested writes (each a savepoint)
        self.db.execute("PRAGMA busy_timeout=30000")
        self._wal()

    def _wal(self) -> None:
        """Switch a new store to WAL. Two processes opening a new store at once both try, and SQLite
        answers the one that finds the other mid-switch "database is locked" at once, without waiting
        on the busy timeout: try again, as the timeout would have, for up to 30 s."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        """PRAGMA user_version says how many migrations a database has had; each runs in the one write
        transaction, so a database is never half-migrated and two processes never both migrate."""
        if self.version() >= len(migrations):
            return
        with self.transaction() as db:
            version = self.version()  # again, under the write lock: another process may have migrated
            for number in range(version + 1, len(migrations) + 1):
                for statement in migrations[number - 1]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(migrations)}")

    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self, serialize: bool = True) -> Iterator[Db]:
        """A write transaction (BEGIN IMMEDIATE: SQLite's one writer); nested, a savepoint, so a nested
        write that fails leaves nothing half-written in the outer one."""
        with self.lock:
            if self.db.in_transaction:
                self._savepoints += 1
                name = f"nested_{self._savepoints}"
                self.db.execute(f"SAVEPOINT {name}")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._savepoints -= 1
                self.db.execute(f"RELEASE {name}")
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def read(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], Any]:
        with self.lock:
            cur = self.db.execute(sql, args)
            # Materialised under the lock; callers iterate after it is released.
            return cur.fetchall(), cur.description


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """The store's SQL for psycopg: `?` placeholders become `%s` (the store's SQL never has a literal `?`),
    and a literal `%` (LIKE 'resolved:%') is escaped."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgDb:
    """A psycopg connection with the `?` SQL the store writes."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Cursor:
        cur = self._conn.cursor()
        cur.execute(_pg(sql), args)
        return cur  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor:
        cur = self._conn.cursor()
        cur.executemany(_pg(sql), list(rows))  # rowcount: the sum over the rows (psycopg 3.1+)
        return cur  # type: ignore[no-any-return]


# Every statement in a bounded time: a lock wait (another agent's write) as SQLite's busy timeout, and a
# transaction left open by an agent that hangs is ended by the server, never holding the others for long.
_SESSION = "-c lock_timeout=30s -c statement_timeout=60s -c idle_in_transaction_session_timeout=60s"


class PostgresBackend:
    """A PostgreSQL database several agents share. The tables live in their own schema (`runbook`), so
    the database may be one that holds other things."""

    name = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self.lock = threading.RLock()
        self._depth = 0
        self._serialized = False
        self._conn: Any = self._connect()

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,  # transactions are explicit (conn.transaction(), nested as savepoints)
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="runbook",
                options=_SESSION,
                # A dead peer (an agent host gone, a network cut) is noticed in ~25 s, not hours.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise _unavailable(exc) from None
        conn.execute("SET search_path TO runbook")  # made by the first migration, if not there yet
        return conn

    def _ready(self) -> None:
        """Reconnect between transactions when the connection broke (a restart or failover of the
        database): the store outlives one connection."""
        if self._depth == 0 and (self._conn.closed or self._conn.broken):
            self._conn = self._connect()

    def migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        import psycopg

        try:
            self._migrate(migrations)
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StateUnavailable(f"state database: cannot create the runbook schema's tables: {exc}") from None

    def _migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        with self.lock:
            self._ready()
            with self._conn.transaction():
                # One agent migrates; the others wait here, then find nothing left to do.
                self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_APP, _MIGRATE))
                # Only when missing: an agent whose role may not create schemas uses the one made for it.
                if self._conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'runbook'").fetchone() is None:
                    self._conn.execute("CREATE SCHEMA runbook")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL)"
                )
                version = self.version()
                db = _PgDb(self._conn)
                for number in range(version + 1, len(migrations) + 1):
                    for statement in migrations[number - 1]:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version (version, at) VALUES (?, ?)", (number, time.time()))

    def version(self) -> int:
        with self.lock:
            self._ready()
            exists = self._conn.execute("SELECT to_regclass('schema_version')").fetchone()[0]
            if exists is None:
                return 0
            row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self, serialize: bool = True) -> Iterator[Db]:
        """A write transaction; nested, a savepoint (psycopg nests `transaction()` so). `serialize` takes
        the store's write lock, as SQLite's BEGIN IMMEDIATE does; a claim that locks its own rows with
        SKIP LOCKED does without it."""
        import psycopg

        with self.lock:
            self._ready()
            outer = self._depth == 0
            self._depth += 1
            try:
                with self._conn.transaction():
                    if serialize and not self._serialized:
                        self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_APP, _WRITE))
                        self._serialized = True
                    yield _PgDb(self._conn)
            except psycopg.OperationalError as exc:
                if not outer:
                    raise
                raise _unavailable(exc) from None
            finally:
                self._depth -= 1
                if outer:
                    self._serialized = False

    def read(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], Any]:
        import psycopg

        with self.lock:
            self._ready()
            try:
                cur = self._conn.execute(_pg(sql), args)
                return cur.fetchall(), cur.description
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> StateUnavailable:
    """A connection lost, a lock or statement timeout: one line (psycopg's first; it names host and port,
    never the password, and every caller redacts anyway)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StateUnavailable(f"state database: {first}")
