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

    now_sql = None  # one host: its clock is every process's

    def now(self, db: Db) -> float:
        return time.time()

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
        self._serialized_at: int | None = None  # the nesting depth that took the write lock
        self._conn: Any = None
        self._connect()

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        """A connection lost, a lock or statement timeout, a refusal: one line, psycopg's first. It names
        host and port; the URL's password is masked here too (libpq quotes a badly encoded one)."""
        from agent.redaction import MASK, secrets_in_url

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for secret in secrets_in_url(self._url):
            first = first.replace(secret, MASK)
        return StateUnavailable(f"state database: {first}")

    def _connect(self) -> None:
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
            conn.execute("SET search_path TO runbook")  # made by the first migration, if not there yet
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None
        self._conn = conn

    def _ready(self) -> None:
        """Reconnect between transactions when the connection broke (a restart or failover of the
        database): the store outlives one connection."""
        if self._depth == 0 and (self._conn.closed or self._conn.broken):
            self._connect()

    def migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        import psycopg

        try:
            # Up to date (the usual start): no DDL, no lock, so a role that may only read and write the
            # tables (the schema migrated by its owner) starts too.
            if self.version() >= len(migrations):
                return
            self._migrate(migrations)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        with self.lock:
            self._ready()
            with self._conn.transaction():
                # One agent migrates; the others wait here, then find nothing left to do.
                self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_APP, _MIGRATE))
                if self._conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'runbook'").fetchone() is None:
                    self._conn.execute("CREATE SCHEMA runbook")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL)"
                )
                version = self._version()
                db = _PgDb(self._conn)
                for number in range(version + 1, len(migrations) + 1):
                    for statement in migrations[number - 1]:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version (version, at) VALUES (?, ?)", (number, time.time()))

    def version(self) -> int:
        import psycopg

        with self.lock:
            try:
                self._ready()
                return self._version()
            except psycopg.Error as exc:
                raise self._unavailable(exc) from None

    def _version(self) -> int:
        exists = self._conn.execute("SELECT to_regclass('schema_version')").fetchone()[0]
        if exists is None:
            return 0
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._conn.close()

    # The database's clock, as epoch seconds: what heartbeats and lock expiry are measured by, so agents
    # on hosts whose clocks differ still agree on who is late.
    now_sql = "SELECT extract(epoch FROM clock_timestamp())::float8"

    def now(self, db: Db) -> float:
        return float(db.execute(self.now_sql).fetchone()[0])

    @contextmanager
    def transaction(self, serialize: bool = True) -> Iterator[Db]:
        """A write transaction; nested, a savepoint (psycopg nests `transaction()` so). `serialize` takes
        the store's write lock, as SQLite's BEGIN IMMEDIATE does; a claim that locks its own rows with
        SKIP LOCKED does without it."""
        import psycopg

        with self.lock:
            outer = self._depth == 0
            try:
                self._ready()
            except psycopg.Error as exc:
                raise self._unavailable(exc) from None
            self._depth += 1
            depth, failed = self._depth, False
            try:
                with self._conn.transaction():
                    if serialize and self._serialized_at is None:
                        self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_APP, _WRITE))
                        self._serialized_at = depth
                    yield _PgDb(self._conn)
            except psycopg.OperationalError as exc:
                failed = True
                if not outer:
                    raise
                raise self._unavailable(exc) from None
            except BaseException:
                failed = True
                raise
            finally:
                self._depth -= 1
                # The lock goes with the (sub)transaction that took it when that one ends without
                # being kept: the whole transaction, or a savepoint rolled back.
                if outer or (failed and self._serialized_at == depth):
                    self._serialized_at = None

    def read(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], Any]:
        import psycopg

        with self.lock:
            try:
                self._ready()
                cur = self._conn.execute(_pg(sql), args)
                return cur.fetchall(), cur.description
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None
