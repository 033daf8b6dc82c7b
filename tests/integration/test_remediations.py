"""Remediations not covered by the game days, each against the real service: postgres.restore,
redis.pause_queue/resume_queue (Swarm services: test_swarm.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from sandbox import faults, stack
from tests.integration.conftest import cli, run_in_terminal, run_runbook

pytestmark = pytest.mark.integration
DSN = stack.AGENT_ENV["DATABASE_URL"]


def run(agent_env: dict[str, str], runbooks: Path, runbook_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    return run_runbook(agent_env, runbook_id, "--runbooks", str(runbooks), *args)


def write_runbook(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "runbooks"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rb{len(list(directory.iterdir()))}.yaml").write_text(textwrap.dedent(text))
    return directory


RESTORE = """
id: restore-db
title: Restore the database
severity: SEV-1
params:
  dsn: {{default: "{{{{ config.database_url }}}}", secret: true}}
  backup: {backup}
checks:
  - id: orders
    check: postgres.query
    with: {{dsn: "{{{{ params.dsn }}}}", sql: SELECT count(*) FROM rbtest_orders}}
remediations:
  - id: restore
    do: postgres.restore
    with: {{dsn: "{{{{ params.dsn }}}}", backup: "{{{{ params.backup }}}}"}}
    when: "true"
    approval: auto
"""


def _pg_dump(path: Path, *args: str) -> None:
    env = {**os.environ, "PGPASSWORD": stack.AGENT_PASSWORD}
    where = ["-h", "127.0.0.1", "-p", str(stack.PORTS["db"]), "-U", "runbook"]
    subprocess.run(["pg_dump", *args, "--no-owner", *where, "-f", str(path), "app"], env=env, check=True)


@pytest.fixture
def orders():
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rbtest_orders")
        conn.execute("CREATE TABLE rbtest_orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO rbtest_orders VALUES (1, 'good-1'), (2, 'good-2'), (3, 'good-3')")
    yield
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rbtest_orders")


def _corrupt() -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DELETE FROM rbtest_orders")
        conn.execute("INSERT INTO rbtest_orders VALUES (99, 'corrupted')")


def _items() -> list[str]:
    with psycopg.connect(DSN) as conn:
        return [r[0] for r in conn.execute("SELECT item FROM rbtest_orders ORDER BY id").fetchall()]


def test_postgres_restore_is_manual_only_and_dumps_first(dc, agent_env, tmp_path: Path, orders) -> None:
    backups = Path(agent_env["RUNBOOK_STATE_DIR"]) / "backups"
    backups.mkdir(parents=True)
    _pg_dump(backups / "good.dump", "--format=custom")
    _corrupt()
    runbooks = write_runbook(tmp_path, RESTORE.format(backup="good.dump"))
    # `approval: auto` in the runbook does not make a destructive remediation automatic.
    code, report = run(agent_env, runbooks, "restore-db")
    assert report["remediations"][0]["decision"] == "pending"
    assert "sha256" in report["remediations"][0]["plan"]["changes"][1]["summary"]
    code, report = run(agent_env, runbooks, "restore-db", "--yes")
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"], code) == ("applied", "applied", 0), rem
    assert _items() == ["good-1", "good-2", "good-3"]
    dump = Path(rem["results"][0]["dump"])
    assert dump.parent == backups and dump.read_bytes().startswith(b"PGDMP")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # a whole database: private
    assert stat.S_IMODE(backups.parent.stat().st_mode) == 0o700
    listing = subprocess.run(["pg_restore", "--data-only", "-f", "-", str(dump)], capture_output=True, text=True)
    assert "corrupted" in listing.stdout  # the state before the restore is kept
    assert stack.AGENT_PASSWORD not in json.dumps(report)


def test_restore_never_runs_psql_meta_commands_nor_reads_outside_its_directory(
    dc, agent_env, tmp_path: Path, orders
) -> None:
    backups = Path(agent_env["RUNBOOK_STATE_DIR"]) / "backups"
    backups.mkdir(parents=True)
    pwned = tmp_path / "pwned"
    # A plain SQL backup carrying a psql shell escape: once, `\! id` ran as the agent's user.
    (backups / "evil.sql").write_text(f"\\! touch {pwned}\nSELECT 1;\n")
    outside = tmp_path / "outside.dump"
    _pg_dump(outside, "--format=custom")
    (backups / "link.dump").symlink_to(outside)
    _corrupt()
    for i, (backup, reason) in enumerate(
        [
            ("evil.sql", "not a pg_dump custom-format archive"),
            (str(outside), "not inside the backup directory"),
            ("../outside.dump", "not inside the backup directory"),
            ("link.dump", "not inside the backup directory"),
        ]
    ):
        runbooks = write_runbook(tmp_path / str(i), RESTORE.format(backup=backup))
        _, report = run(agent_env, runbooks, "restore-db", "--yes")
        rem = report["remediations"][0]
        assert rem["decision"] == "plan_failed" and reason in rem["decision_reason"], rem
    assert not pwned.exists() and _items() == ["corrupted"]


def test_restore_is_bound_to_the_approved_file(dc, agent_env, tmp_path: Path, orders) -> None:
    backups = Path(agent_env["RUNBOOK_STATE_DIR"]) / "backups"
    backups.mkdir(parents=True)
    _pg_dump(backups / "good.dump", "--format=custom")
    runbooks = write_runbook(tmp_path, RESTORE.format(backup="good.dump"))
    _, report = run(agent_env, runbooks, "restore-db")
    run_id, planned = report["run_id"], report["remediations"][0]["plan"]["fingerprint"]
    _corrupt()
    _pg_dump(backups / "good.dump", "--format=custom")  # the file approved is replaced (now holds "corrupted")
    approve = cli(agent_env, "approve", run_id, "--plan", planned, "--runbooks", str(runbooks))
    assert approve.returncode == 1 and "plan changed" in approve.stderr, approve.stdout + approve.stderr
    assert _items() == ["corrupted"]


def test_restore_effect_checks_the_file_again_before_it_reads_it(dc, tmp_path: Path, orders) -> None:
    from pydantic import SecretStr

    from agent.config import Settings
    from agent.context import ApplyContext, RunClients
    from agent.exceptions import ApplyError
    from remediations.effects.postgres import restore
    from remediations.postgres import RestoreSpec

    backup = tmp_path / "b.dump"
    _pg_dump(backup, "--format=custom")
    spec = RestoreSpec(dsn=SecretStr(DSN), path=str(backup), size=backup.stat().st_size, sha256="0" * 64)
    _corrupt()
    with pytest.raises(ApplyError, match="changed since it was approved"):
        restore(ApplyContext(RunClients(Settings(state_dir=tmp_path))), spec)
    assert _items() == ["corrupted"]


QUEUE = """
id: queue-{verb}
title: {verb} the email queue
severity: SEV-2
params:
  url: {{default: "{{{{ config.redis_url }}}}", secret: true}}
checks:
  - id: redis
    check: redis.ping
    with: {{url: "{{{{ params.url }}}}"}}
remediations:
  - id: {verb}
    do: redis.{verb}_queue
    with: {{url: "{{{{ params.url }}}}", queue: email}}
    when: "true"
    approval: auto
    cooldown: 0s
"""


def test_pause_and_resume_queue(dc, agent_env, tmp_path: Path, restore) -> None:
    client = redis.Redis.from_url(stack.AGENT_ENV["REDIS_URL"], decode_responses=True)
    runbooks = write_runbook(tmp_path, QUEUE.format(verb="pause"))
    write_runbook(tmp_path, QUEUE.format(verb="resume"))
    code, report = run(agent_env, runbooks, "queue-pause")
    assert report["remediations"][0]["decision"] == "applied"
    assert client.hget("bull:email:meta", "paused") == "1"
    faults.flood_queue(50)
    time.sleep(2)
    assert client.llen("bull:email:wait") == 50  # the worker honours the pause: nothing is lost or taken
    code, report = run(agent_env, runbooks, "queue-pause")
    assert report["remediations"][0]["decision"] == "nothing_to_do"
    code, report = run(agent_env, runbooks, "queue-resume")
    assert (report["remediations"][0]["decision"], code) == ("applied", 0)
    assert faults.wait_for(lambda: client.llen("bull:email:wait") == 0, timeout=30)


def test_manual_remediation_asks_on_a_terminal(dc, agent_env, tmp_path: Path, restore) -> None:
    client = redis.Redis.from_url(stack.AGENT_ENV["REDIS_URL"], decode_responses=True)
    runbooks = write_runbook(tmp_path, QUEUE.format(verb="pause").replace("approval: auto", "approval: manual"))
    argv = [sys.executable, "-m", "agent", "run", "queue-pause", "--runbooks", str(runbooks)]
    env = {k: v for k, v in agent_env.items() if k != "NO_COLOR"}
    _, out = run_in_terminal(argv, env, "n")
    assert "Approve pause" in out and "pause queue email" in out  # the exact plan is shown before asking
    assert "rejected" in out and client.hget("bull:email:meta", "paused") is None
    _code, out = run_in_terminal(argv, env, "y")
    assert "applied" in out and client.hget("bull:email:meta", "paused") == "1"
    records = cli(agent_env, "audit", "show", "--json").stdout
    approvals = [json.loads(line) for line in records.splitlines() if '"event": "approval"' in line]
    assert approvals and approvals[-1]["approver"].startswith("root@")


def test_pause_switch_denies_until_resumed(dc, agent_env, tmp_path: Path, restore) -> None:
    runbooks = write_runbook(tmp_path, QUEUE.format(verb="pause"))

    assert cli(agent_env, "pause", "--reason", "deploy freeze").returncode == 0
    assert "PAUSED by root@" in cli(agent_env, "status").stdout
    _, report = run(agent_env, runbooks, "queue-pause")
    rem = report["remediations"][0]
    assert rem["decision"] == "denied" and rem["decision_reason"].endswith(": deploy freeze")
    assert cli(agent_env, "resume").returncode == 0
    _code, report = run(agent_env, runbooks, "queue-pause")
    assert report["remediations"][0]["decision"] == "applied"
    events = [json.loads(line)["event"] for line in cli(agent_env, "audit", "show", "--json").stdout.splitlines()]
    assert "paused" in events and "resumed" in events


RESTART_SERVICE = """
id: restart-workers
title: Restart the workers
severity: SEV-3
checks:
  - id: workers
    check: docker.replicas
    with: {service: worker}
remediations:
  - id: restart
    do: docker.restart
    with: {service: worker}
    when: "true"
    approval: auto
"""


def test_restart_a_service_one_container_at_a_time(dc, agent_env, tmp_path: Path, restore) -> None:
    stack.create(dc, "worker", 2).start()
    runbooks = write_runbook(tmp_path, RESTART_SERVICE)
    since = time.time()
    code, report = run(agent_env, runbooks, "restart-workers")
    rem = report["remediations"][0]
    assert (rem["decision"], code) == ("applied", 0)
    assert [c["target"] for c in rem["plan"]["changes"]] == ["container:sandbox-worker-1", "container:sandbox-worker-2"]
    events = list(
        dc.events(since=f"{since:.9f}", until=int(time.time()) + 1, filters={"event": ["kill", "start"]}, decode=True)
    )
    order = [
        (e["Actor"]["Attributes"]["name"], e["status"]) for e in events if "worker" in e["Actor"]["Attributes"]["name"]
    ]
    first_start = order.index(("sandbox-worker-1", "start"))
    assert all(name == "sandbox-worker-1" for name, _ in order[: first_start + 1])  # one done before the next
    assert ("sandbox-worker-2", "start") in order[first_start + 1 :]
