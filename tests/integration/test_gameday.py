"""Game days: a real fault in the sandbox, the runbook fixing it within policy, verified; and the dry run
beside it leaving Docker and the database exactly as they were."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from sandbox import faults, stack
from tests.integration.conftest import REPO, checks_by_id, run_runbook, starts, throwaway_container, world

pytestmark = pytest.mark.integration


def dry_run_changes_nothing(dc, run_json, runbook_id: str, *args: str) -> dict:
    before = world(dc)
    _, report = run_json(runbook_id, "--dry-run", *args)
    assert world(dc) == before
    assert report["mode"] == "dry-run" and not any(r["applied"] for r in report["remediations"])
    return report


def test_app_down_restart_verified(dc, run_json, restore) -> None:
    faults.kill_app(dc)
    planned = dry_run_changes_nothing(dc, run_json, "app-down")
    assert planned["remediations"][0]["decision"] == "planned_only"
    since = time.time()
    code, report = run_json("app-down")
    rem = report["remediations"][0]
    assert (rem["decision"], rem["approver"], rem["outcome"]) == ("applied", "auto (runbook)", "resolved")
    assert (report["status"], report["final_status"], code) == ("CRITICAL", "OK", 0)
    assert starts(dc, "sandbox-app-1", since) == 1
    assert faults.traffic(3, "/health") == [200, 200, 200]


def test_db_connections_exhausted_terminate_idle_verified(dc, run_json, restore) -> None:
    with faults.idle_in_transaction(26) as conns:
        time.sleep(1.5)
        planned = dry_run_changes_nothing(dc, run_json, "db-connection", "--param", "idle_after=1s")
        plan = {r["id"]: r for r in planned["remediations"]}["terminate_idle"]["plan"]
        assert len(plan["changes"]) == 26  # one per session, never the agent's or the app's
        code, report = run_json("db-connection", "--param", "idle_after=1s")
        rem = {r["id"]: r for r in report["remediations"]}["terminate_idle"]
        assert (rem["decision"], rem["outcome"]) == ("applied", "resolved")
        assert sum(r["terminated"] for r in rem["results"]) == 26
        assert report["final_status"] == "OK" and code == 0
        assert all(c.closed or c.broken for c in conns if _probe_dead(c))


def _probe_dead(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return True
    return False


def test_app_holding_dead_connections_restarted_verified(dc, run_json, restore) -> None:
    faults.stop_db(dc)
    faults.traffic(2, "/health")
    dc.containers.get(stack.container_name("db")).start()
    stack.wait_healthy(dc, [stack.container_name("db")])
    assert faults.traffic(2, "/health") == [500, 500]  # the database is back; the app is not
    dry_run_changes_nothing(dc, run_json, "db-connection")
    code, report = run_json("db-connection")
    rem = {r["id"]: r for r in report["remediations"]}
    assert (rem["restart_app"]["decision"], rem["restart_app"]["outcome"]) == ("applied", "resolved")
    assert rem["terminate_idle"]["would_apply"] is False
    assert report["final_status"] == "OK" and code == 0
    assert faults.traffic(2, "/health") == [200, 200]


def test_bad_deploy_rolled_back_to_previous(dc, run_json, restore) -> None:
    good = dc.images.get(f"{stack.APP_IMAGE}:latest")
    good.tag(stack.APP_IMAGE, "previous")
    faults.deploy_app(dc, faults.build_bad_app(dc))
    assert faults.traffic(40).count(500) == 40
    dry_run_changes_nothing(dc, run_json, "high-error-rate")
    # Rollback is a manual remediation: without --yes and without a terminal it waits for a person.
    code, report = run_json("high-error-rate")
    assert report["remediations"][0]["decision"] == "pending" and code == 2, report["remediations"][0]
    code, report = run_json("high-error-rate", "--yes")
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"]) == ("applied", "resolved"), rem
    change = rem["plan"]["changes"][0]
    assert change["before"]["image"] == f"{stack.APP_IMAGE}:bad"
    assert change["after"] == {"image": f"{stack.APP_IMAGE}:previous", "image_id": good.id}
    app = dc.containers.get("sandbox-app-1")
    assert app.image.id == good.id
    assert app.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == "58080"
    assert app.labels["com.docker.compose.service"] == "app"
    assert "FAIL_RATIO=1" not in app.attrs["Config"]["Env"]  # the bad image's own setting went with it
    assert faults.traffic(20).count(200) == 20
    code, report = run_json("high-error-rate", "--dry-run")
    assert checks_by_id(report)["error_rate"]["status"] == "OK"


def test_email_queue_workers_scaled_depth_falls(dc, run_json, restore) -> None:
    faults.flood_queue(20_000)
    dry_run_changes_nothing(dc, run_json, "email-queue")
    code, report = run_json("email-queue")
    rem = {r["id"]: r for r in report["remediations"]}["scale_workers"]
    assert (rem["decision"], rem["outcome"], code) == ("applied", "resolved", 0), rem
    assert len(rem["plan"]["changes"]) == 9
    workers = dc.containers.list(
        filters={"label": ["com.docker.compose.project=sandbox", "com.docker.compose.service=worker"]}
    )
    assert len(workers) == 10
    assert {w.name for w in workers} == {f"sandbox-worker-{n}" for n in range(1, 11)}
    assert checks_by_id({"checks": report["final_checks"]})["depth"]["metrics"]["depth"] < 1000


def test_two_runs_at_once_restart_the_app_once(dc, agent_env, restore) -> None:
    faults.kill_app(dc)
    since = time.time()
    cmd = [sys.executable, "-m", "agent", "run", "app-down", "--yes", "--json"]
    procs = [subprocess.Popen(cmd, env=agent_env, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    decisions = sorted(o.split('"decision": "')[1].split('"')[0] for o in outs)
    assert starts(dc, "sandbox-app-1", since) == 1, decisions
    assert decisions.count("applied") == 1


CRASHY = """
id: crashy
title: Crash loop
severity: SEV-2
checks:
  - id: container
    check: docker.container
    with: {{service: {service}}}
remediations:
  - id: restart
    do: docker.restart
    with: {{service: {service}, wait_healthy: 5}}
    approval: auto
    limit: {{max: 2, per: 1h}}
    cooldown: 0s
{extra}
"""


def _crashy(throwaway_name: str, service: str, seconds: float):
    """A container of the sandbox's compose project that dies after `seconds`, every time it is started."""
    return throwaway_container(
        ["sh", "-c", f"sleep {seconds}; exit 1"],
        name=throwaway_name,
        labels={
            "com.docker.compose.project": stack.PROJECT,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": "1",
        },
    )


@pytest.fixture
def crashy_runbooks(tmp_path: Path):
    def write(service: str, extra: str = "") -> Path:
        directory = tmp_path / f"runbooks-{service}"
        directory.mkdir()
        (directory / "crashy.yaml").write_text(textwrap.dedent(CRASHY.format(service=service, extra=extra)))
        return directory

    return write


def test_restart_loop_stops_at_the_limit_then_escalates(dc, agent_env, crashy_runbooks) -> None:
    runbooks = crashy_runbooks("crashy")
    crashy = _crashy("sandbox-crashy-1", "crashy", 2)
    container = crashy.get_wrapped_container()
    try:
        container.wait(timeout=30)
        since = time.time()
        decisions = []
        for _ in range(4):
            container.wait(timeout=30)  # it has died (again)
            result = subprocess.run(
                [sys.executable, "-m", "agent", "run", "crashy", "--runbooks", str(runbooks), "--json"],
                env=agent_env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            rem = json.loads(result.stdout)["remediations"][0]
            decisions.append(rem["decision"])
            if rem["decision"] == "denied":
                assert rem["escalation"] and "ESCALATE crashy restart: limit of 2" in result.stderr
        assert decisions == ["applied", "applied", "denied", "denied"]
        assert starts(dc, "sandbox-crashy-1", since) == 2
    finally:
        crashy.stop()


def test_restart_not_resolved_opens_the_circuit(dc, agent_env, crashy_runbooks) -> None:
    runbooks = crashy_runbooks("crashy2", extra="    verify: [container]\n    verify_timeout: 4s")
    crashy = _crashy("sandbox-crashy2-1", "crashy2", 0.5)
    container = crashy.get_wrapped_container()
    try:
        container.wait(timeout=30)
        since = time.time()
        outcomes = []
        for _ in range(2):
            _, report = run_runbook(agent_env, "crashy", "--runbooks", str(runbooks))
            rem = report["remediations"][0]
            outcomes.append((rem["decision"], rem["outcome"]))
            container.wait(timeout=30)
        assert outcomes[0][0] == "applied" and outcomes[0][1] in ("not_resolved", "apply_failed")
        assert outcomes[1] == ("denied", None)
        assert starts(dc, "sandbox-crashy2-1", since) == 1
        status = subprocess.run(
            [sys.executable, "-m", "agent", "status"], env=agent_env, cwd=REPO, capture_output=True, text=True
        )
        assert "circuit open: container:sandbox-crashy2-1" in status.stdout
    finally:
        crashy.stop()
