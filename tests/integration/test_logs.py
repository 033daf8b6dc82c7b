"""The daemon's operational log (agent.logs) from a real daemon process: JSON lines on stderr, one per
request, alert, run start and end and remediation decision, at the level asked for, and redacted."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.integration.conftest import REPO
from tests.integration.harness import Daemon

pytestmark = pytest.mark.integration
FIXTURES = REPO / "tests" / "fixtures" / "alertmanager-webhooks.jsonl"


def test_the_daemon_logs_requests_alerts_runs_and_decisions_redacted(dc, daemon_env: dict[str, str]) -> None:
    secret = secrets.token_hex(12)  # unique: in the environment as a secret, then sent in alerts
    env = {**daemon_env, "PAGER_API_TOKEN": secret}
    daemon = Daemon(env, REPO / "runbooks", "--dry-run").start()
    try:
        delivery = json.loads(FIXTURES.read_text().splitlines()[0])  # email-queue: a run with decisions
        response = httpx.post(daemon.url + delivery["path"], json=delivery["body"], headers=delivery["headers"])
        assert response.status_code == 202, response.text
        run_id = response.json()["results"][0]["run_id"]
        assert daemon.wait_run(run_id)["status"] == "finished"
        # Outside text that carries secrets: in an alert's name (logged), and in the URL's query.
        leaky = [f"Leak {secret}", f"Leak password={secret[::-1]}"]
        for name in leaky:
            assert daemon.alert(name)["outcome"] == "no_runbook"
        assert daemon.intake.get(f"/v1/runs?token={secret}").status_code == 403  # the intake token reads nothing
    finally:
        daemon.stop()

    output = daemon.output()
    assert secret not in output and secret[::-1] not in output
    lines = daemon.log_lines()
    assert lines, output[-2000:]
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    by_event: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_event.setdefault(str(line["event"]), []).append(line)

    # One line per request: the route's template, never its query or a header.
    posted = [r for r in by_event["request"] if r["route"] == delivery["path"]]
    assert posted and posted[0]["method"] == "POST" and posted[0]["status"] == 202
    assert isinstance(posted[0]["duration_ms"], float) and posted[0]["peer"] == "127.0.0.1"
    refused = [r for r in by_event["request"] if r["route"] == "/v1/runs" and r["status"] == 403]
    assert refused and "token" not in json.dumps(refused)
    # One line per alert, with what became of it; the secrets in the names masked.
    alerts = by_event["alert"]
    assert {(a["alertname"], a["outcome"], a.get("run_id")) for a in alerts} >= {
        ("EmailQueueBackedUp", "run_started", run_id)
    }
    leaked_names = [str(a["alertname"]) for a in alerts if str(a["alertname"]).startswith("Leak")]
    assert len(leaked_names) == 2 and all("***" in name for name in leaked_names), leaked_names
    # The run's start and end, and each remediation decision, from the audit records.
    assert [r["runbook"] for r in by_event["run_started"] if r["run_id"] == run_id] == ["email-queue"]
    finished = [r for r in by_event["run_finished"] if r["run_id"] == run_id]
    assert len(finished) == 1 and finished[0]["status"] in ("OK", "WARNING", "CRITICAL")
    decisions = [r for r in by_event["remediation_decision"] if r["run_id"] == run_id]
    assert decisions and all(d.get("remediation") or d.get("id") for d in decisions)
    # At the default level (info), no per-check lines; the audit log has them.
    assert "check_result" not in by_event
    assert by_event["daemon_started"] and by_event["daemon_stopping"]


def test_log_level_and_format_are_chosen(dc, daemon_env: dict[str, str]) -> None:
    daemon = Daemon(daemon_env, REPO / "runbooks", "--dry-run", "--log-level", "warning").start()
    try:
        assert daemon.alert("NoSuchAlert")["outcome"] == "no_runbook"
    finally:
        daemon.stop()
    assert daemon.log_lines() == []  # info lines (requests, alerts) below the level

    console = Daemon({**daemon_env, "RUNBOOK_LOG_FORMAT": "console"}, REPO / "runbooks", "--dry-run").start()
    try:
        assert console.alert("NoSuchAlert")["outcome"] == "no_runbook"
    finally:
        console.stop()
    said = console.output()
    assert console.log_lines() == [] and "alert" in said and "alertname=NoSuchAlert" in said
