"""The seed runbooks diagnosing (dry-run) the sandbox, healthy and with real faults: the real CLI as a process."""

from __future__ import annotations

import time

import pytest

from sandbox import faults, stack
from tests.integration.conftest import checks_by_id

pytestmark = pytest.mark.integration
SEED = ["app-down", "db-connection", "high-error-rate", "email-queue", "host-resources"]


@pytest.mark.parametrize("runbook_id", SEED)
def test_healthy_sandbox_reports_ok(dc, run_json, runbook_id: str) -> None:
    code, report = run_json(runbook_id)
    checks = {c["id"]: c for c in report["checks"]}
    not_ok = {i: (c["status"], c["summary"]) for i, c in checks.items() if c["status"] != "OK"}
    # host-resources' CPU and load are readings of the machine running the tests, not of the sandbox: on
    # a busy CI host (2 shared cores, a neighbour pinning one) they rightly warn, or are critical. What
    # must hold is that they are readings judged by their thresholds; nothing else may be anything but OK.
    busy = {i for i in not_ok if runbook_id == "host-resources" and i in ("cpu", "load")}
    for i in busy:
        assert not_ok[i][0] in ("WARNING", "CRITICAL") and checks[i]["metrics"], not_ok
        if i == "cpu":
            above = checks[i]["metrics"]["cpu_pct"] >= (95 if not_ok[i][0] == "CRITICAL" else 85)
            assert above, checks[i]
    worst = max((not_ok[i][0] for i in busy), key=["WARNING", "CRITICAL"].index, default="OK")
    expected = {"OK": (0, "OK"), "WARNING": (1, "WARNING"), "CRITICAL": (2, "CRITICAL")}[worst]
    assert (code, report["status"], {i: v for i, v in not_ok.items() if i not in busy}) == (*expected, {})
    assert report["mode"] == "live" and report["runbook"] == runbook_id
    assert not any(r["would_apply"] for r in report["remediations"])


def test_app_killed_with_exit_137(dc, run_json, restore) -> None:
    faults.kill_app(dc)
    code, report = run_json("app-down", "--dry-run")
    checks = checks_by_id(report)
    assert (code, report["status"]) == (2, "CRITICAL")
    assert (checks["container"]["status"], checks["container"]["code"]) == ("CRITICAL", "container_not_running")
    assert checks["container"]["details"]["containers"][0]["exit_code"] == 137
    assert checks["health"]["status"] == "CRITICAL"
    assert checks["database"]["status"] == "OK" and checks["redis"]["status"] == "OK"
    decision = report["remediations"][0]
    assert (decision["id"], decision["would_apply"], decision["decision"]) == ("restart_app", True, "planned_only")
    assert decision["applied"] is False and decision["plan"]["changes"][0]["target"] == "container:sandbox-app-1"


def test_database_stopped_then_app_holding_dead_connections(dc, run_json, restore) -> None:
    faults.stop_db(dc)
    code, report = run_json("db-connection", "--dry-run")
    checks = checks_by_id(report)
    assert (code, report["status"]) == (2, "CRITICAL")
    assert (checks["db_reachable"]["status"], checks["db_reachable"]["code"]) == ("CRITICAL", "db_unreachable")
    assert checks["pool"]["code"] == "dependency_failed"
    code, app_report = run_json("app-down", "--dry-run")
    assert checks_by_id(app_report)["health"]["status"] == "CRITICAL"
    # Restarting the app would not help while the database is down.
    assert not app_report["remediations"][0]["would_apply"]

    # The database comes back; the app still holds its dead connection and logs the error.
    dc.containers.get(stack.container_name("db")).start()
    stack.wait_healthy(dc, [stack.container_name("db")])
    faults.traffic(3, "/health")
    code, report = run_json("db-connection", "--dry-run")
    checks = checks_by_id(report)
    assert checks["db_reachable"]["status"] == "OK"
    assert (checks["app_errors"]["status"], checks["app_errors"]["code"]) == ("CRITICAL", "log_pattern_found")
    decisions = {d["id"]: d["would_apply"] for d in report["remediations"]}
    assert decisions == {"terminate_idle": False, "restart_app": True}
    assert checks["app_health"]["status"] == "CRITICAL"


def test_connections_exhausted_by_idle_in_transaction_sessions(dc, run_json, restore) -> None:
    # The app role may use 27 of 30 slots (3 are reserved for superusers like the agent); take 26.
    with faults.idle_in_transaction(26):
        time.sleep(1.5)
        code, report = run_json("db-connection", "--dry-run", "--param", "idle_after=1s")
    checks = checks_by_id(report)
    assert (code, report["status"]) == (2, "CRITICAL")
    assert (checks["pool"]["status"], checks["pool"]["code"]) == ("CRITICAL", "db_connections_exhausted")
    assert checks["idle_in_transaction"]["status"] == "CRITICAL"
    assert checks["idle_in_transaction"]["metrics"]["idle_in_transaction"] >= 26
    decisions = {d["id"]: d["would_apply"] for d in report["remediations"]}
    assert decisions["terminate_idle"] is True


def test_email_queue_flooded(dc, run_json, restore) -> None:
    faults.flood_queue(30_000)
    code, report = run_json("email-queue", "--dry-run")
    checks = checks_by_id(report)
    assert (code, report["status"]) == (2, "CRITICAL")
    assert (checks["depth"]["status"], checks["depth"]["code"]) == ("CRITICAL", "queue_backed_up")
    assert checks["depth"]["metrics"]["depth"] > 10_000
    decisions = {d["id"]: d["would_apply"] for d in report["remediations"]}
    assert decisions == {"scale_workers": True, "pause_queue": False}


def test_bad_deploy_raises_the_error_rate(dc, run_json, restore) -> None:
    faults.deploy_app(dc, faults.build_bad_app(dc))
    codes = faults.traffic(40)
    assert codes.count(500) == 40
    code, report = run_json("high-error-rate", "--dry-run")
    checks = checks_by_id(report)
    assert (code, report["status"]) == (2, "CRITICAL")
    assert (checks["error_rate"]["status"], checks["error_rate"]["code"]) == ("CRITICAL", "error_rate_high")
    assert checks["error_rate"]["metrics"]["error_pct"] > 5
    assert report["remediations"][0]["id"] == "rollback" and report["remediations"][0]["would_apply"]


def test_dry_run_is_recorded_as_such(dc, run_json) -> None:
    code, report = run_json("email-queue", "--dry-run")
    assert (code, report["mode"]) == (0, "dry-run")
