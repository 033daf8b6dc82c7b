"""A unique database password must appear nowhere: stdout, JSON, stderr, errors, audit log."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sandbox import stack
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def unique_role():
    password = "pw-" + secrets.token_hex(12)
    role = "rbtest_" + secrets.token_hex(4)
    with psycopg.connect(stack.AGENT_ENV["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    yield role, password
    with psycopg.connect(stack.AGENT_ENV["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"DROP ROLE {role}")


def test_password_never_appears_in_any_output(dc, agent_env, unique_role, tmp_path: Path) -> None:
    role, password = unique_role
    good = f"postgresql://{role}:{password}@127.0.0.1:{stack.PORTS['db']}/app"
    # The same password on a closed port: the error path must not leak it either.
    bad = f"postgresql://{role}:{password}@127.0.0.1:1/app"
    outputs = []
    param_file = tmp_path / "params"
    param_file.write_text(f"dsn={bad}\n")
    cases = [
        (good, []),
        (good, ["--json"]),
        (bad, []),
        (bad, ["--json"]),
        (good, ["--param", f"dsn={bad}"]),
        (good, ["--param-file", str(param_file)]),
        (bad, ["--verbose"]),
    ]
    for dsn, extra in cases:
        env = {**agent_env, "DATABASE_URL": dsn}
        verbose = ["--verbose"] if "--verbose" in extra else []
        extra = [e for e in extra if e != "--verbose"]
        for args in (["run", "db-connection", *extra], ["show", "db-connection"], ["run", "no-such-runbook"]):
            args = [*verbose, *args]
            result = subprocess.run(
                [sys.executable, "-m", "agent", *args],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            outputs += [result.stdout, result.stderr]
    # A config file holding the URL, and an error about that file.
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {good}\nread_timeout: nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "run", "db-connection"],
        env={k: v for k, v in agent_env.items() if k != "DATABASE_URL"},
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    outputs += [result.stdout, result.stderr]
    audit = Path(agent_env["RUNBOOK_STATE_DIR"]) / "audit.jsonl"
    outputs.append(audit.read_text())
    assert "run_started" in outputs[-1] and "***" in outputs[-1]
    # Nor in the state (secret overrides are never stored), nor in `runbook runs --json`.
    for name in ("state.sqlite3", "state.sqlite3-wal"):
        stored = Path(agent_env["RUNBOOK_STATE_DIR"]) / name
        if stored.exists():
            outputs.append(stored.read_bytes().decode("latin-1"))
    runs = subprocess.run(
        [sys.executable, "-m", "agent", "runs", "--json"], env=agent_env, cwd=REPO, capture_output=True, text=True
    )
    outputs.append(runs.stdout)
    leaks = [o for o in outputs if password in o]
    assert not leaks, leaks[0][:500]
