"""The state store the tests use: SQLite in the test's directory, or, when RUNBOOK_TEST_STATE_URL names a
PostgreSQL server (tests/integration/test_state_postgres.py sets it), a database of its own on that server.
So every state test runs against both backends: the same test, the same assertions."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from agent.state import StateStore

ENV = "RUNBOOK_TEST_STATE_URL"
PREFIX = "rbt_"  # the databases made here, found and dropped by the test that made the server


def backend() -> str:
    return "postgresql" if os.environ.get(ENV) else "sqlite"


def open_state(directory: Path, name: str = "state.sqlite3") -> StateStore:
    """A store for this test; opened again with the same arguments, another handle on the same data (as
    a second process would have)."""
    server = os.environ.get(ENV)
    if not server:
        return StateStore(directory / name)
    return StateStore(database_url(server, directory, name))


def database_url(server: str, directory: Path, name: str) -> str:
    import psycopg

    database = PREFIX + hashlib.sha256(f"{directory}/{name}".encode()).hexdigest()[:24]
    with psycopg.connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + database))


sqlite_only = pytest.mark.skipif(backend() != "sqlite", reason="about SQLite's own files and locking")
