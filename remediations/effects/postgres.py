"""Effects on PostgreSQL: terminate a backend, dump and restore a database (pg_dump/pg_restore)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.plugin_api import ApplyContext, ApplyError, EffectSet, open_private, private_dir
from remediations.postgres import ARCHIVE_MAGIC, DumpSpec, RestoreSpec, TerminateSpec, sha256_of

effects = EffectSet("postgres")


@effects.effect("postgres.backend.terminate", TerminateSpec)
def terminate(ctx: ApplyContext, spec: TerminateSpec) -> dict[str, Any]:
    conn = ctx.clients.postgres(spec.dsn.get_secret_value())
    # Only the very session planned: same pid, same start time, still idle in its transaction.
    row = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start::text = %s"
        " AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
        (spec.pid, spec.backend_start),
    ).fetchone()
    return {"pid": spec.pid, "terminated": bool(row and row[0]), "already_gone": row is None}


def _client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the password in PGPASSWORD: never on a command line."""
    import psycopg  # noqa: F401 - the package before its modules (see tests/unit/test_imports.py)
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _run(argv: list[str], env: dict[str, str], **kwargs: Any) -> None:
    result = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True, timeout=3600, check=False, **kwargs)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ApplyError(f"{argv[0]} failed: {lines[-1] if lines else result.returncode}")


@effects.effect("postgres.database.dump", DumpSpec)
def dump(ctx: ApplyContext, spec: DumpSpec) -> dict[str, Any]:
    """The database as it is, in custom format, into a private file (0600 in a 0700 directory): a full
    dump holds everything the database does."""
    conninfo, env = _client_env(spec.dsn.get_secret_value())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = private_dir(Path(spec.directory))  # made 0700 if new; a configured one is left as it is
    path = directory / f"{spec.database}-before-restore-{stamp}.dump"
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        _run(["pg_dump", "--format=custom", "--no-owner", f"--dbname={conninfo}"], env, stdout=fd)
    finally:
        os.close(fd)
    return {"dump": str(path), "bytes": path.stat().st_size}


@effects.effect("postgres.database.restore", RestoreSpec)
def restore(ctx: ApplyContext, spec: RestoreSpec) -> dict[str, Any]:
    """pg_restore reads the very bytes that were hashed: the open file, checked again against the
    approval's size and SHA-256 just before, is its input."""
    conninfo, env = _client_env(spec.dsn.get_secret_value())
    fd = os.open(spec.path, os.O_RDONLY)
    try:
        size, sha256 = sha256_of(fd)
        if (size, sha256) != (spec.size, spec.sha256):
            raise ApplyError(f"backup {spec.path} changed since it was approved (sha256 {sha256[:16]})")
        os.lseek(fd, 0, os.SEEK_SET)
        if os.read(fd, len(ARCHIVE_MAGIC)) != ARCHIVE_MAGIC:
            raise ApplyError(f"backup {spec.path} is not a custom-format archive")
        os.lseek(fd, 0, os.SEEK_SET)
        _run(
            ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={conninfo}"],
            env,
            stdin=fd,
        )
    finally:
        os.close(fd)
    return {"restored_from": spec.path, "sha256": spec.sha256}
