"""Effects on PostgreSQL: terminate a backend, dump and restore a database (pg_dump/psql)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.changes import Change
from agent.context import ApplyContext
from agent.exceptions import ApplyError
from agent.plugins import EffectSet

effects = EffectSet("postgres")


@effects.effect("postgres.backend.terminate")
def terminate(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    conn = ctx.clients.postgres(change.spec["dsn"])
    # Only the very session planned: same pid, same start time, still idle in its transaction.
    row = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start::text = %s"
        " AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
        (change.spec["pid"], change.spec["backend_start"]),
    ).fetchone()
    return {"pid": change.spec["pid"], "terminated": bool(row and row[0]), "already_gone": row is None}


def _client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the password in PGPASSWORD: never on a command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ApplyError(
            f"{argv[0]} failed: {result.stderr.strip().splitlines()[-1] if result.stderr else result.returncode}"
        )


@effects.effect("postgres.database.dump")
def dump(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    conninfo, env = _client_env(change.spec["dsn"])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(change.spec["path"].replace("{time}", stamp))
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["pg_dump", "--clean", "--if-exists", "--no-owner", f"--file={path}", f"--dbname={conninfo}"], env)
    return {"dump": str(path), "bytes": path.stat().st_size}


@effects.effect("postgres.database.restore")
def restore(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    conninfo, env = _client_env(change.spec["dsn"])
    path = Path(change.spec["path"])
    if path.stat().st_size != change.spec["size"]:
        raise ApplyError(f"backup {path} changed since it was approved")
    _run(["psql", "--no-psqlrc", "--single-transaction", "-v", "ON_ERROR_STOP=1", f"--file={path}", conninfo], env)
    return {"restored_from": str(path)}
