"""The daemon as a real process, driven over HTTP: intake, auth, routing, dedup under storms, approvals,
crash safety and shutdown."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import faults, stack
from tests.integration.conftest import REPO, cli
from tests.integration.harness import TOKEN, Daemon, alertmanager, free_port, write_runbooks

pytestmark = pytest.mark.integration
# Real deliveries of Alertmanager 0.25 (copied from the reference material): contract fixtures.
FIXTURES = REPO / "tests" / "fixtures" / "alertmanager-webhooks.jsonl"


def test_reference_deliveries_are_accepted_and_deduplicated(dc, daemon: Daemon) -> None:
    outcomes = []
    for line in FIXTURES.read_text().splitlines():
        delivery = json.loads(line)
        response = httpx.post(daemon.url + delivery["path"], json=delivery["body"], headers=delivery["headers"])
        assert response.status_code == 202, response.text
        outcomes.append([(r["outcome"], r.get("runbook")) for r in response.json()["results"]])
    assert outcomes[0] == [("run_started", "email-queue")]
    # Two alerts of one group about one service: one incident, one run.
    assert outcomes[1] == [("run_started", "app-down"), ("deduplicated", "app-down")]
    assert outcomes[2] == [("deduplicated", "app-down"), ("resolved", "app-down")]
    runs = {r["runbook"]: r for r in daemon.runs() if r["actor"].startswith("alert:")}
    assert set(runs) == {"email-queue", "app-down"}
    assert runs["app-down"]["params"] == {"app_service": "app"} and runs["email-queue"]["params"] == {"queue": "email"}
    for run in runs.values():
        finished = daemon.wait_run(run["run_id"])
        checks = [(c["id"], c["status"], c["summary"]) for c in (finished.get("report") or {}).get("checks", [])]
        assert finished["result"] == "OK", (finished["runbook"], checks or finished)
    # The resolved alert closed the incident: the same alert firing again is a new incident, a new run.
    again = json.loads(FIXTURES.read_text().splitlines()[1])
    response = httpx.post(daemon.url + again["path"], json=again["body"], headers=again["headers"])
    assert [r["outcome"] for r in response.json()["results"]] == ["run_started", "deduplicated"]


def test_refusals_carry_a_reason_and_start_nothing(dc, daemon: Daemon) -> None:
    before = len(daemon.runs())
    body = {"name": "AppDown", "labels": {"service": "app"}}
    assert httpx.post(daemon.url + "/v1/alerts", json=body).status_code == 401
    wrong = httpx.post(daemon.url + "/v1/alerts", json=body, headers={"Authorization": "Bearer wrong-token-123"})
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "missing or invalid bearer token")
    big = daemon.intake.post(
        "/v1/alerts", content=b"{" + b" " * 17_000_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert (big.status_code, big.json()["detail"]) == (413, "request body over the size limit (16777216 bytes)")
    bad = daemon.intake.post("/v1/alerts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"]
    missing = daemon.intake.post("/v1/alerts/alertmanager", json={"receiver": "x", "alerts": []})
    assert missing.status_code == 422 and "status" in missing.json()["detail"]
    assert len(daemon.runs()) == before
    assert daemon.client.get("/v1/runs/nope").status_code == 404
    assert httpx.get(daemon.url + "/metrics").status_code == 401
    metrics = daemon.client.get("/metrics").text
    assert 'runbook_requests_rejected_total{reason="unauthenticated"} 3.0' in metrics
    daemon.stop()
    assert TOKEN not in daemon.output() and '"event": "request"' in daemon.output()


def test_hmac_signatures_and_replay_window(dc, daemon_env: dict[str, str]) -> None:
    secret = "hmac-secret-for-tests"
    d = Daemon({**daemon_env, "RUNBOOK_HMAC_SECRET": secret}, REPO / "runbooks").start()
    try:
        body = json.dumps({"name": "Nothing", "labels": {}}).encode()

        def post(stamp: str, signature: str) -> httpx.Response:
            headers = {
                "X-Runbook-Timestamp": stamp,
                "X-Runbook-Signature": f"sha256={signature}",
                "Content-Type": "application/json",
            }
            return d.intake.post("/v1/alerts", content=body, headers=headers)

        def sign(stamp: str) -> str:
            message = f"{stamp}.POST./v1/alerts.".encode() + body
            return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

        now = str(int(time.time()))
        assert d.intake.post("/v1/alerts", content=body).status_code == 403
        assert post(now, "0" * 64).status_code == 403
        old = str(int(time.time()) - 3600)
        assert post(old, sign(old)).json()["detail"] == "timestamp outside the replay window"
        accepted = post(now, sign(now))
        assert accepted.status_code == 202 and accepted.json()["results"][0]["outcome"] == "no_runbook"
        assert post(now, sign(now)).status_code == 403  # the same signed request again: a replay
    finally:
        d.stop()


HOSTILE = ["{{ ''.__class__.__mro__ }}", "$(touch /tmp/runbook-pwned)", "; rm -rf /tmp/runbook-victim", "a\nb\r\nc"]


def test_hostile_label_values_stay_data(dc, daemon: Daemon, tmp_path: Path) -> None:
    victim = Path("/tmp/runbook-victim")
    victim.mkdir(exist_ok=True)
    Path("/tmp/runbook-pwned").unlink(missing_ok=True)
    for i, value in enumerate(HOSTILE):
        # Outside text in labels no runbook maps, and in annotations: carried along, never acted on.
        result = daemon.alert(
            "AppDown", {"service": "app", "instance": value}, annotations={"summary": value}, fingerprint=f"h{i}"
        )
        assert result["outcome"] in ("run_started", "deduplicated")
        run = daemon.wait_run(result["run_id"])
        assert run["params"] == {"app_service": "app"}
        # In the label that names the target, it matches no trigger (app-down is the app's runbook).
        assert daemon.alert("AppDown", {"service": value})["outcome"] == "no_runbook"
    assert not Path("/tmp/runbook-pwned").exists() and victim.exists()


def test_an_alert_cannot_choose_another_container(dc, daemon: Daemon) -> None:
    # Before: app-down matched AppDown alone and mapped `service` into an automatic restart, so
    # `service: db` planned `restart container sandbox-db-1`.
    db = dc.containers.get(stack.container_name("db"))
    started = db.attrs["State"]["StartedAt"]
    result = daemon.alert("AppDown", {"service": "db"})
    assert result["outcome"] == "no_runbook"
    runs = [r for r in daemon.runs() if r["runbook"] == "app-down"]
    assert all(r["params"].get("app_service", "app") == "app" for r in runs)
    db.reload()
    assert db.attrs["State"]["StartedAt"] == started


def test_replays_copies_and_big_payloads_start_one_run(dc, daemon: Daemon) -> None:
    payload = json.loads(FIXTURES.read_text().splitlines()[0])["body"]
    first = daemon.intake.post("/v1/alerts/alertmanager", json=payload).json()["results"][0]
    assert first["outcome"] == "run_started"
    # Alertmanager re-sends a group every group_interval; an HA pair delivers it two or three times.
    replies: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: replies.append(daemon.intake.post("/v1/alerts/alertmanager", json=payload).status_code)
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies == [202, 202, 202]
    big = {
        **payload,
        "alerts": [
            {
                **payload["alerts"][0],
                "fingerprint": f"fp{i:04d}",
                "labels": {**payload["alerts"][0]["labels"], "i": str(i)},
            }
            for i in range(1000)
        ],
    }
    response = daemon.intake.post("/v1/alerts/alertmanager", json=big)
    assert response.status_code == 202
    assert {r["outcome"] for r in response.json()["results"]} == {"deduplicated"}
    assert [r["run_id"] for r in daemon.runs() if r["runbook"] == "email-queue"] == [first["run_id"]]


def test_alert_flood_for_a_failing_target_remediates_once(dc, daemon: Daemon, restore) -> None:
    faults.kill_app(dc)
    since = time.time()
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "AppDown", "service": "app", "n": str(i)},
            "fingerprint": f"flood{i:05d}",
        }
        for i in range(1000)
    ]
    body = {"status": "firing", "receiver": "runbook", "alerts": alerts}
    statuses = [daemon.intake.post("/v1/alerts/alertmanager", json=body).status_code for _ in range(10)]
    assert statuses == [202] * 10
    runs = [r for r in daemon.runs() if r["runbook"] == "app-down" and r["created"] >= since]
    assert len(runs) == 1
    report = daemon.wait_run(runs[0]["run_id"])["report"]
    assert report["remediations"][0]["outcome"] == "resolved"
    from tests.integration.conftest import starts

    assert starts(dc, "sandbox-app-1", since) == 1
    assert "runbook_alerts_deduplicated_total 9999.0" in daemon.client.get("/metrics").text


def test_real_alertmanager_delivers_and_the_runbook_fixes(dc, daemon: Daemon, tmp_path: Path, restore) -> None:
    with alertmanager(tmp_path, daemon.url) as am:
        faults.kill_app(dc)
        since = time.time()
        am.fire("alertname=AppDown", "service=app", "severity=critical")

        def app_run() -> list[dict[str, Any]]:
            return [r for r in daemon.runs() if r["runbook"] == "app-down" and r["created"] >= since]

        assert faults.wait_for(lambda: bool(app_run()), timeout=60)
        run = daemon.wait_run(app_run()[0]["run_id"])
        assert run["actor"].startswith("alert:AppDown:")
        assert run["report"]["remediations"][0]["outcome"] == "resolved"
        assert faults.traffic(2, "/health") == [200, 200]


SLOW = """
id: slow-sweep
title: Slow sweep
severity: SEV-4
triggers:
  - {alertname: SlowSweep}
params:
  url: {default: "{{ config.redis_url }}", secret: true}
checks:
  - id: cpu
    check: host.cpu
    with: {sample: 6s}
    timeout: 10s
remediations:
  - id: pause
    do: redis.pause_queue
    with: {url: "{{ params.url }}", queue: rbtest-slow}
    when: "true"
    approval: auto
"""


def test_kill_9_mid_run_leaves_it_interrupted_never_resumed(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    runbooks = write_runbooks(tmp_path, SLOW)
    d = Daemon(daemon_env, runbooks).start()
    try:
        run_id = d.alert("SlowSweep")["run_id"]
        assert faults.wait_for(lambda: d.client.get(f"/v1/runs/{run_id}").json()["status"] == "running", timeout=10)
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.start()
        run = d.client.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "interrupted"
        time.sleep(8)  # longer than the run would have taken: nothing picked it up again
        assert d.client.get(f"/v1/runs/{run_id}").json()["status"] == "interrupted"
        audit = (Path(daemon_env["RUNBOOK_STATE_DIR"]) / "audit.jsonl").read_text()
        assert f'"run_id":"{run_id}"' in audit and "run_interrupted" in audit
        assert '"event":"apply_started"' not in audit
        assert run_id in cli(daemon_env, "runs", "--status", "interrupted").stdout
    finally:
        d.stop()


def test_sigterm_finishes_checks_and_starts_no_remediation(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    runbooks = write_runbooks(tmp_path, SLOW)
    d = Daemon(daemon_env, runbooks, "--shutdown-deadline", "15").start()
    run_id = d.alert("SlowSweep")["run_id"]
    assert faults.wait_for(lambda: d.client.get(f"/v1/runs/{run_id}").json()["status"] == "running", timeout=10)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(30)
    assert time.monotonic() - started < 20
    d.start()
    run = d.client.get(f"/v1/runs/{run_id}").json()
    d.stop()
    assert run["status"] == "finished"
    rem = run["report"]["remediations"][0]
    assert (rem["decision"], rem["applied"]) == ("denied", False)
    assert "shutting down" in rem["decision_reason"]


MANUAL = """
id: manual-pause
title: Pause a queue, with a person's approval
severity: SEV-3
triggers:
  - {alertname: ProviderDown}
params:
  url: {default: "{{ config.redis_url }}", secret: true}
checks:
  - id: redis
    check: redis.ping
    with: {url: "{{ params.url }}"}
remediations:
  - id: pause
    do: redis.pause_queue
    with: {url: "{{ params.url }}", queue: rbtest-manual}
    when: "true"
    approval: manual
    cooldown: 0s
"""


def test_pending_approval_over_the_api_and_the_cli(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(stack.AGENT_ENV["REDIS_URL"], decode_responses=True)
    client.delete("bull:rbtest-manual:meta")
    runbooks = write_runbooks(tmp_path, MANUAL)
    d = Daemon(daemon_env, runbooks, "--dedup-window", "0").start()
    try:
        run = d.wait_run(d.alert("ProviderDown")["run_id"])
        assert run["report"]["remediations"][0]["decision"] == "pending"
        (pending,) = run["pending"]
        stale = d.client.post(f"/v1/runs/{run['run_id']}/approve", json={"fingerprint": "0" * 16})
        assert stale.status_code == 409 and "pending plan is" in stale.json()["detail"]
        as_intake = d.intake.post(f"/v1/runs/{run['run_id']}/approve", json={"fingerprint": pending["fingerprint"]})
        assert as_intake.status_code == 403  # the alert sender's token cannot decide
        ok = d.client.post(f"/v1/runs/{run['run_id']}/approve", json={"fingerprint": pending["fingerprint"]})
        assert ok.status_code == 200 and ok.json()["decision"] == "applied", ok.text
        assert ok.json()["approver"] == "api:alice" and client.hget("bull:rbtest-manual:meta", "paused") == "1"
        again = d.client.post(f"/v1/runs/{run['run_id']}/approve", json={"fingerprint": pending["fingerprint"]})
        assert again.status_code == 404  # decided once only

        # The same from a terminal on the host, against the same state store while the daemon runs.
        client.delete("bull:rbtest-manual:meta")
        second = d.wait_run(d.alert("ProviderDown", fingerprint="second")["run_id"])
        listed = cli(daemon_env, "runs").stdout
        assert f"{second['run_id']}" in listed and "pending: pause" in listed
        # Not on a terminal, nothing is asked: the plan approved must be named, as the message says.
        unnamed = cli(daemon_env, "approve", second["run_id"], "--runbooks", str(runbooks))
        (plan,) = second["pending"]
        assert unnamed.returncode == 2 and f"--plan {plan['fingerprint']}" in unnamed.stderr, unnamed.stderr
        assert client.hget("bull:rbtest-manual:meta", "paused") is None
        approved = cli(
            daemon_env, "approve", second["run_id"], "--plan", plan["fingerprint"], "--runbooks", str(runbooks)
        )
        assert approved.returncode == 0 and "pause: applied" in approved.stdout, approved.stderr
        assert client.hget("bull:rbtest-manual:meta", "paused") == "1"
        client.delete("bull:rbtest-manual:meta")
        third = d.wait_run(d.alert("ProviderDown", fingerprint="third")["run_id"])
        rejected = cli(
            daemon_env, "reject", third["run_id"], "--reason", "provider is back", "--runbooks", str(runbooks), "--json"
        )
        decided = json.loads(rejected.stdout)  # --json: the decision as an object
        assert (decided["run_id"], decided["id"], decided["decision"]) == (third["run_id"], "pause", "rejected")
        assert d.client.get(f"/v1/runs/{third['run_id']}").json()["report"]["remediations"][0]["decision"] == "rejected"
    finally:
        d.stop()
        client.delete("bull:rbtest-manual:meta")


HARMLESS = """
id: harmless
title: Harmless
severity: SEV-4
triggers:
  - {alertname: Harmless}
checks:
  - id: load
    check: host.load
schedule: {every: 2s}
"""


def test_scheduled_sweeps_run_on_their_own(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    d = Daemon(daemon_env, write_runbooks(tmp_path, HARMLESS), "--dry-run").start()
    try:
        assert faults.wait_for(lambda: sum(r["actor"] == "schedule" for r in d.runs()) >= 2, timeout=20)
        assert {r["mode"] for r in d.runs()} == {"dry-run"}
    finally:
        d.stop()


def test_schemathesis_finds_no_server_error(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    # A dry-run daemon with a harmless runbook: generated alerts may start runs, never changes.
    runbooks = write_runbooks(tmp_path, HARMLESS.replace("schedule: {every: 2s}", ""))
    d = Daemon(daemon_env, runbooks, "--dry-run", "--public-metrics").start()
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{d.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert result.returncode == 0, result.stdout[-3000:]
    finally:
        d.stop()


def test_shipped_alertmanager_receiver_config_is_valid() -> None:
    result = subprocess.run(
        ["amtool", "check-config", str(REPO / "deploy" / "alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_daemon_refuses_to_start_without_a_token(daemon_env: dict[str, str]) -> None:
    env = {k: v for k, v in daemon_env.items() if not k.startswith("RUNBOOK_API_TOKEN")}
    result = cli(env, "daemon", "--port", str(free_port()), timeout=30)
    assert result.returncode == 2 and "needs an API token" in result.stderr


def test_a_dry_run_daemon_never_applies_an_approval(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(stack.AGENT_ENV["REDIS_URL"], decode_responses=True)
    client.delete("bull:rbtest-manual:meta")
    runbooks = write_runbooks(tmp_path, MANUAL)
    # A live run from a terminal leaves a pending approval in the state both share.
    live = cli(daemon_env, "run", "manual-pause", "--json", "--runbooks", str(runbooks))
    report = json.loads(live.stdout)
    assert report["remediations"][0]["decision"] == "pending"
    d = Daemon(daemon_env, runbooks, "--dry-run").start()
    try:
        fingerprint = report["remediations"][0]["plan"]["fingerprint"]
        answer = d.client.post(f"/v1/runs/{report['run_id']}/approve", json={"fingerprint": fingerprint})
        assert answer.status_code == 409 and "dry-run mode" in answer.json()["detail"], answer.text
        assert client.hget("bull:rbtest-manual:meta", "paused") is None
        assert d.client.get(f"/v1/runs/{report['run_id']}").json()["pending"]  # still waiting for a live agent
        audit = (Path(daemon_env["RUNBOOK_STATE_DIR"]) / "audit.jsonl").read_text()
        assert '"event":"apply_started"' not in audit
    finally:
        d.stop()
        client.delete("bull:rbtest-manual:meta")


def test_a_storm_group_of_ten_thousand_is_taken_inside_alertmanagers_timeout(dc, daemon: Daemon) -> None:
    payload = json.loads(FIXTURES.read_text().splitlines()[0])["body"]
    alerts = [
        {
            **payload["alerts"][0],
            "fingerprint": f"storm{i:05d}",
            "labels": {**payload["alerts"][0]["labels"], "n": str(i)},
        }
        for i in range(10_000)
    ]
    body = json.dumps({**payload, "alerts": alerts}).encode()
    assert len(body) > 1_048_576  # over the old limit, which answered 413 (never retried)
    # Alertmanager's webhook timeout is 10 s: a sender that waits no longer must get its 202.
    sender = httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    response = sender.post("/v1/alerts/alertmanager", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    outcomes = [r["outcome"] for r in response.json()["results"]]
    assert outcomes.count("run_started") == 1 and outcomes.count("deduplicated") == 9_999


def test_slow_connections_do_not_starve_the_daemon(dc, daemon_env: dict[str, str]) -> None:
    import resource

    def low_fd_limit() -> None:  # as on a default system: 1024 descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    d = Daemon(daemon_env, REPO / "runbooks", "--request-timeout", "5", preexec=low_fd_limit).start()
    slow: list[socket.socket] = []
    try:
        # 1,100 connections that send half a request and then nothing (bounded: count and ~20 s).
        for _ in range(1100):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s.sendall(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        answered = []
        for _ in range(5):
            started = time.monotonic()
            answered.append(httpx.get(d.url + "/healthz", timeout=10).status_code)
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))
        assert answered == [200] * 5
    finally:
        for s in slow:
            s.close()
        d.stop()
    # A refused or closed connection is logged once a minute, not once per attempt (was: 168 MB); the
    # requests that were answered have a line each.
    output = [line for line in d.output().splitlines() if '"event": "request"' not in line]
    assert len(output) < 50, output[-20:]


def test_a_torn_audit_log_answers_503_until_repaired(dc, daemon_env: dict[str, str], tmp_path: Path) -> None:
    d = Daemon(daemon_env, write_runbooks(tmp_path, HARMLESS.replace("schedule: {every: 2s}", ""))).start()
    audit = Path(daemon_env["RUNBOOK_STATE_DIR"]) / "audit.jsonl"
    try:
        started = d.alert("Harmless")
        assert started["outcome"] == "run_started"
        # Torn once that run has written its last record: this write takes no lock, the daemon's do, and
        # a record the daemon appended right after these bytes would bury them mid-file instead.
        d.wait_run(started["run_id"])
        with open(audit, "ab") as fh:
            fh.write(b'{"seq":999999,"event":"che')  # the disk filled mid-write
        refused = d.intake.post("/v1/alerts", json={"name": "Harmless", "fingerprint": "after-tear"})
        # Alertmanager retries a 5xx, never a 4xx; and the log's path is not the sender's business.
        assert refused.status_code == 503 and str(audit) not in refused.text
        assert httpx.get(d.url + "/readyz").status_code == 503
        repaired = cli(daemon_env, "audit", "repair")
        assert repaired.returncode == 0 and "removed a torn tail of 26 bytes" in repaired.stdout, repaired.stderr
        assert httpx.get(d.url + "/readyz").status_code == 200
        assert d.intake.post("/v1/alerts", json={"name": "Harmless", "fingerprint": "after-repair"}).status_code == 202
        verified = cli(daemon_env, "audit", "verify")
        assert verified.returncode == 0, verified.stderr
    finally:
        d.stop()
