"""The daemon's API in-process (no services): credentials, intake limits, all-or-nothing intake,
signatures, rate limits and failing closed when the audit log is damaged."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.alerts import IncomingAlert
from agent.api import ApiSecurity, create_app
from agent.config import Settings
from agent.daemon import Daemon, QueueFull
from agent.loader import load_runbooks
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor

INTAKE = "intake-token-123456"
ALICE = "alice-token-1234567"
RUNBOOK = """
id: svc-down
title: A service is down
severity: SEV-2
triggers:
  - {alertname: SvcDown}
alert_params:
  service: {from: labels.service, allow: [app, worker]}
params:
  service: app
checks:
  - id: load
    check: host.load
"""


class Api:
    def __init__(self, tmp_path: Path, *, queue_size: int = 100, **security: Any) -> None:
        directory = tmp_path / "runbooks"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rb.yaml").write_text(textwrap.dedent(RUNBOOK))
        self.settings = Settings(state_dir=tmp_path / "state")
        self.daemon = Daemon(
            load_runbooks([directory]),
            self.settings,
            Redactor(),
            policy=EnvironmentPolicy(),
            queue_size=queue_size,
        )
        self.security = ApiSecurity(intake_token=INTAKE, decision_tokens={"alice": ALICE}, **security)
        self.client = TestClient(create_app(self.daemon, self.security))

    def post(self, path: str, body: Any, token: str = INTAKE, **headers: str) -> Any:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}", **headers})

    def get(self, path: str, token: str | None = ALICE) -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})

    def alert(self, **labels: str) -> Any:
        return self.post("/v1/alerts", {"name": "SvcDown", "labels": labels})


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path)


def am(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "firing", "receiver": "runbook", "alerts": alerts}


def firing(i: int, **labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": "SvcDown", **labels}, "fingerprint": f"fp{i}"}


def test_the_intake_token_only_delivers_alerts(api: Api) -> None:
    assert api.alert(service="app").status_code == 202
    assert api.get("/v1/runs", token=INTAKE).status_code == 403
    run_id = api.get("/v1/runs").json()[0]["run_id"]
    refused = api.post(f"/v1/runs/{run_id}/approve", {}, token=INTAKE)
    assert refused.status_code == 403 and "decision credential" in refused.json()["detail"]
    assert api.post("/v1/pause", {"reason": "x"}, token=INTAKE).status_code == 403
    assert api.get("/v1/runs", token="not-a-token-at-all").status_code == 401
    assert api.post("/v1/alerts", {"name": "X"}, token=ALICE).status_code == 401  # decisions do not deliver


def test_the_person_recorded_is_the_credentials(api: Api) -> None:
    # The body cannot name the approver: it is not a field.
    response = api.post("/v1/pause", {"reason": "freeze", "approver": "mallory"}, token=ALICE)
    assert response.status_code == 422
    response = api.post("/v1/pause", {"reason": "freeze"}, token=ALICE)
    assert response.json() == {"paused": True, "by": "api:alice", "reason": "freeze"}
    assert api.daemon.state.paused()[1] == "api:alice"
    records = [json.loads(line) for line in api.settings.audit_path.read_text().splitlines()]
    assert records[-1]["event"] == "paused" and records[-1]["actor"] == "api:alice"


def test_alert_params_outside_what_the_runbook_allows_are_refused_and_recorded(api: Api) -> None:
    (result,) = api.alert(service="db").json()["results"]
    assert result["outcome"] == "refused" and 'labels.service="db" is not allowed' in result["reason"]
    assert api.daemon.state.runs() == [] and api.daemon.state.alert_count() == 1
    assert api.alert(service="worker").json()["results"][0]["outcome"] == "run_started"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "SvcDown", "labels": {"service": "a" * 2049}}, "at most 2048 characters"),
        ({"name": "A" * 200_000}, "at most 200 characters"),
        ({"name": "SvcDown", "labels": {str(i): "x" for i in range(65)}}, "at most 64 items"),
        ({"name": "SvcDown", "annotations": {"d": "x" * 8193}}, "at most 8192 characters"),
    ],
)
def test_oversized_alerts_are_refused_naming_the_limit(api: Api, body: dict[str, Any], named: str) -> None:
    response = api.post("/v1/alerts", body)
    assert response.status_code == 422 and named in response.json()["detail"], response.json()
    assert len(response.content) < 4000  # the input is not echoed back
    assert api.daemon.state.alert_count() == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "SvcDown", "labels": {"service": "app\\ud800"}}',
        '{"name": "SvcDown", "labels": {"x\\udfff": "app"}}',
        '{"name": "Svc\\ud800Down"}',
    ],
)
def test_a_lone_surrogate_is_a_clear_422_and_nothing_is_recorded(api: Api, raw: str) -> None:
    response = api.client.post(
        "/v1/alerts",
        content=raw.encode(),
        headers={"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422 and response.json()["detail"]
    assert api.daemon.state.alert_count() == 0 and api.daemon.state.runs() == []


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/alerts", '{"name": "SvcDown", "labels": {"service": "app\\u0000"}}'),
        ("/v1/alerts", '{"name": "Svc\\u0000Down"}'),
        ("/v1/alerts", '{"name": "SvcDown", "fingerprint": "f\\u0000"}'),
        (
            "/v1/alerts/alertmanager",
            '{"status": "firing", "receiver": "r", "alerts": [{"status": "firing", "labels": {"alertname": "SvcDown"},'
            ' "annotations": {"summary": "a\\u0000b"}}]}',
        ),
    ],
)
def test_a_nul_is_a_clear_422_and_nothing_is_recorded(api: Api, path: str, raw: str) -> None:
    # PostgreSQL's text cannot hold NUL: let in, it failed the whole group commit (every sender's 500).
    response = api.client.post(
        path, content=raw.encode(), headers={"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["detail"]
    assert api.daemon.state.alert_count() == 0 and api.daemon.state.runs() == []


def test_ids_in_paths_are_bounded(api: Api) -> None:
    assert api.get("/v1/incidents/99999999999999999999").status_code == 422  # over SQLite's 64 bits
    assert api.get("/v1/incidents/0").status_code == 422
    assert api.get("/v1/runs/a%00b").status_code == 422
    assert api.get("/v1/runs/" + "a" * 65).status_code == 422
    assert api.get("/v1/runs/no-such-run").status_code == 404


def test_a_payload_the_queue_cannot_hold_is_refused_whole(tmp_path: Path) -> None:
    api = Api(tmp_path, queue_size=1)
    response = api.post("/v1/alerts/alertmanager", am([firing(1, service="app"), firing(2, service="worker")]))
    assert response.status_code == 503 and response.headers["retry-after"]
    assert api.daemon.state.alert_count() == 0 and api.daemon.state.runs() == []  # nothing half-recorded
    response = api.post("/v1/alerts/alertmanager", am([firing(1, service="app"), firing(3, service="app")]))
    assert response.status_code == 202 and api.daemon.state.alert_count() == 2


def test_a_storm_group_of_ten_thousand_is_one_incident(api: Api) -> None:
    alerts = [firing(i, service="app", instance=f"i{i}") for i in range(10_000)]
    response = api.post("/v1/alerts/alertmanager", am(alerts))
    assert response.status_code == 202
    outcomes = [r["outcome"] for r in response.json()["results"]]
    assert outcomes.count("run_started") == 1 and outcomes.count("deduplicated") == 9_999
    assert api.daemon.state.alert_count() == 10_000


def test_a_sender_flooding_is_slowed_with_a_retryable_answer(tmp_path: Path) -> None:
    api = Api(tmp_path, alert_burst=5, alert_rate=0.01)
    codes = [api.alert(service="app").status_code for _ in range(7)]
    assert codes[:5] == [202] * 5 and codes[5:] == [503, 503]


def sign(secret: str, stamp: str, method: str, path: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.{method}.{path}.".encode() + body, hashlib.sha256).hexdigest()


def test_signatures_bind_method_path_and_time_and_are_used_once(tmp_path: Path) -> None:
    api = Api(tmp_path, hmac_secret="hmac-secret-value")
    body = json.dumps({"name": "Other"}).encode()

    def post(path: str, stamp: str, signature: str) -> Any:
        headers = {
            "Authorization": f"Bearer {INTAKE}",
            "Content-Type": "application/json",
            "X-Runbook-Timestamp": stamp,
            "X-Runbook-Signature": f"sha256={signature}",
        }
        return api.client.post(path, content=body, headers=headers)

    now = str(int(time.time()))
    good = sign("hmac-secret-value", now, "POST", "/v1/alerts", body)
    assert post("/v1/alerts", now, good).status_code == 202
    replay = post("/v1/alerts", now, good)
    assert replay.status_code == 403 and "replay" in replay.json()["detail"]
    assert post("/v1/alerts/alertmanager", now, good).status_code == 403  # another path, same signature
    for stamp in ("nan", "1e3", "-1", "99999999999999999999"):
        assert (
            post("/v1/alerts", stamp, sign("hmac-secret-value", stamp, "POST", "/v1/alerts", body)).status_code == 403
        )


def test_docs_pages_are_off_and_metrics_need_a_credential(tmp_path: Path) -> None:
    api = Api(tmp_path)
    assert api.client.get("/docs").status_code == 404 and api.client.get("/redoc").status_code == 404
    assert api.get("/metrics", token=None).status_code == 401
    assert api.get("/openapi.json", token=None).status_code == 401
    assert api.get("/metrics", token=INTAKE).status_code == 200
    assert "/v1/alerts" in api.get("/openapi.json").json()["paths"]
    public = Api(tmp_path / "public", public_metrics=True)
    assert public.get("/metrics", token=None).status_code == 200


def test_a_damaged_audit_log_answers_503_without_its_path_and_is_not_ready(api: Api) -> None:
    api.daemon.start()
    try:
        response = api.alert(service="app")
        assert response.status_code == 202
        run_id = response.json()["results"][0]["run_id"]
        # Its run done first: a worker writing its records while the log is torn would be another test.
        _wait_for(lambda: api.daemon.state.run(run_id)["status"] == "finished")
        with open(api.settings.audit_path, "ab") as fh:
            fh.write(b'{"seq": 99, "event": "tor')
        response = api.alert(service="worker")
        assert response.status_code == 503 and str(api.settings.state_dir) not in response.text
        ready = api.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["audit_log"] is False
        assert api.daemon.state.alert_count() == 1  # the refused payload recorded nothing
    finally:
        api.daemon.stop(5)


def test_the_security_settings_refuse_shared_tokens() -> None:
    with pytest.raises(ValueError, match="intake token"):
        ApiSecurity(intake_token=INTAKE, decision_tokens={"alice": INTAKE})
    with pytest.raises(ValueError, match="share"):
        ApiSecurity(intake_token=INTAKE, decision_tokens={"a": ALICE, "b": ALICE})


def test_nothing_unauthenticated_gets_its_body_parsed(api: Api) -> None:
    # FastAPI parses a body before a route's dependencies run: without the gate, this was a 422 (the
    # daemon had parsed a stranger's body); now the stranger is refused before any of it is read.
    headers = {"Authorization": "Bearer not-a-known-token", "Content-Type": "application/json"}
    response = api.client.post("/v1/alerts/alertmanager", content=b"{not json" + b" " * 100_000, headers=headers)
    assert response.status_code == 401
    response = api.client.post("/v1/alerts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401


def test_a_chunked_body_over_the_limit_is_a_413(tmp_path: Path) -> None:
    api = Api(tmp_path, max_body=1000)

    def chunks() -> Any:
        yield b'{"status":"firing","receiver":"x","alerts":['
        for _ in range(200):
            yield b'{"status":"firing","labels":{"a":"b"}},'
        yield b'{"status":"firing","labels":{"a":"b"}}]}'

    headers = {"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"}
    response = api.client.post("/v1/alerts/alertmanager", content=chunks(), headers=headers)
    assert response.status_code == 413 and "1000 bytes" in response.json()["detail"]
    small = api.client.post("/v1/alerts", content=iter([b'{"name": ', b'"SvcDown"}']), headers=headers)
    assert small.status_code == 202


def test_the_scheduler_survives_a_failing_pass(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def failing(due: dict[str, float]) -> None:
        calls.append(1)
        raise RuntimeError("database is locked")

    monkeypatch.setattr(api.daemon, "_sweeps_due", failing)
    api.daemon.start()
    try:
        deadline = time.monotonic() + 20
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(calls) >= 2 and api.daemon._scheduler.is_alive() and api.daemon.ready
        events = [json.loads(line)["event"] for line in api.settings.audit_path.read_text().splitlines()]
        assert "schedule_failed" in events
    finally:
        api.daemon.stop(5)


def _failing(runbook: str = "svc-down", service: str = "app") -> Any:
    from datetime import UTC, datetime

    from agent.models import CheckResult, RunReport
    from agent.status import Status

    return RunReport(
        run_id="run-1",
        runbook=runbook,
        title="A service is down",
        severity="SEV-2",
        mode="live",
        actor="alert:SvcDown:x",
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        status=Status.CRITICAL,
        params={"service": service},
        checks=[CheckResult("load", "host.load", Status.CRITICAL, "load high", 3.0, code="load_high")],
    )


def test_incidents_over_the_api(api: Api) -> None:
    from agent.incidents import RunOrigin

    record = api.daemon.incidents.after_run(_failing(), RunOrigin("alert:SvcDown:x"))
    assert record is not None
    assert api.get("/v1/incidents", token=INTAKE).status_code == 403  # the intake token reads nothing
    (listed,) = api.get("/v1/incidents").json()
    assert (listed["id"], listed["status"]) == (record.id, "identified")
    base = f"/v1/incidents/{record.id}"
    assert api.post(base + "/ack", {}, token=ALICE).json()["incident"]["commander"] == "api:alice"
    assert api.post(base + "/assign", {"commander": "bob"}, token=ALICE).json()["incident"]["commander"] == "bob"
    api.post(base + "/note", {"text": "looking at the load"}, token=ALICE)
    raised = api.post(base + "/severity", {"severity": "SEV-1", "reason": "all users"}, token=ALICE).json()
    assert raised["incident"]["severity"] == "SEV-1" and raised["targets"]["resolution"]["limit_s"] == 3600
    assert api.post(base + "/severity", {"severity": "SEV-9"}, token=ALICE).status_code == 422
    done = api.post(base + "/resolve", {"reason": "load is down"}, token=ALICE).json()
    assert done["incident"]["status"] == "resolved"
    assert api.post(base + "/ack", {}, token=ALICE).status_code == 409  # resolved: nothing to acknowledge
    kinds = [e["kind"] for e in api.get(base).json()["events"]]
    assert kinds[-5:] == ["acknowledged", "assigned", "note", "severity", "status"]
    assert api.get("/v1/incidents/999").status_code == 404


def test_alerts_join_the_incident_and_a_resolved_alert_resolves_it(api: Api) -> None:
    from agent.incidents import RunOrigin

    record = api.daemon.incidents.after_run(_failing(), RunOrigin("alert:SvcDown:x"))
    assert record is not None
    started = api.post("/v1/alerts/alertmanager", am([firing(1, service="app")])).json()["results"][0]
    assert started["outcome"] == "run_started"  # the run is queued (no worker here): more copies join it
    api.post("/v1/alerts/alertmanager", am([firing(i, service="app") for i in range(2, 40)]))
    events = api.daemon.incidents.store.events(record.id, ("alerts",))
    assert events and events[0].detail["count"] == 38  # one timeline entry for a whole delivery
    resolved = {"status": "resolved", "labels": {"alertname": "SvcDown", "service": "app"}, "fingerprint": "fp1"}
    api.post("/v1/alerts/alertmanager", {"status": "resolved", "receiver": "runbook", "alerts": [resolved]})
    assert api.daemon.incidents.get(record.id).status == "resolved"


@pytest.mark.parametrize("via", ["http", "thread"])
def test_concurrent_deliveries_share_a_commit_and_each_is_durable_before_its_answer(api: Api, via: str) -> None:
    """Group commit: payloads arriving while a batch is written go in the next batch together (one audit
    fsync, one transaction); each is answered only once its own alerts are committed — over HTTP (the
    request awaits on its event loop; the test client runs one loop per request) and from a thread."""
    import sqlite3
    import threading

    daemon = api.daemon
    batches: list[int] = []
    record_many = daemon.audit.record_many

    def slow_record_many(events: list[tuple[str, dict[str, Any]]]) -> None:
        batches.append(len(events))
        if len(batches) == 1:
            time.sleep(0.5)  # the first batch's disk is slow: the others pile up behind it
        record_many(events)

    daemon.audit.record_many = slow_record_many  # type: ignore[method-assign]
    committed: dict[int, int] = {}
    senders = 16

    def deliver(i: int) -> None:
        if via == "http":
            body = {"name": "Noise", "labels": {"n": str(i)}, "fingerprint": f"fp-{i}"}
            response = api.post("/v1/alerts", body)
            assert response.status_code == 202, response.text
            (result,) = response.json()["results"]
            assert result["outcome"] == "no_runbook"
        else:
            alert = IncomingAlert.build("generic", "firing", {"alertname": "Noise", "n": str(i)}, {}, f"fp-{i}")
            (answer,) = daemon.receive([alert])
            assert answer.outcome == "no_runbook"
        # Seen from another connection the moment the answer is given: committed, not just written.
        with sqlite3.connect(api.settings.state_path) as other:
            committed[i] = other.execute("SELECT count(*) FROM alerts WHERE fingerprint = ?", (f"fp-{i}",)).fetchone()[
                0
            ]

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert committed == dict.fromkeys(range(senders), 1)
    assert sum(batches) == senders and len(batches) < senders  # some batches held several payloads
    records = [json.loads(line) for line in api.settings.audit_path.read_text().splitlines()]
    assert len([r for r in records if r["event"] == "alerts_received"]) == senders  # one record per payload


def test_a_bug_in_a_batch_is_an_error_for_its_senders_and_intake_goes_on(api: Api, monkeypatch) -> None:
    admit = api.daemon._admit_batch
    calls = []

    def broken_once(batch: Any) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise AssertionError("a bug")
        admit(batch)

    monkeypatch.setattr(api.daemon, "_admit_batch", broken_once)
    client = TestClient(create_app(api.daemon, api.security), raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {INTAKE}"}
    assert client.post("/v1/alerts", json={"name": "Noise"}, headers=headers).status_code == 500
    assert api.daemon.state.alert_count() == 0
    assert client.post("/v1/alerts", json={"name": "Noise"}, headers=headers).status_code == 202  # not stuck
    assert api.daemon.state.alert_count() == 1


def test_a_refused_payload_in_a_batch_leaves_the_others_recorded(tmp_path: Path) -> None:
    api = Api(tmp_path, queue_size=1)
    first = [IncomingAlert.build("generic", "firing", {"alertname": "SvcDown", "service": "app"}, {}, "a")]
    both = [
        IncomingAlert.build("generic", "firing", {"alertname": "SvcDown", "service": s}, {}, s) for s in ("worker", "x")
    ]
    api.daemon._admit_batch([_arrival(first), refused := _arrival(both), noise := _arrival(_noise())])
    assert isinstance(refused.error, QueueFull)  # the queue had room for one new run, taken by the first
    assert noise.results[0].outcome == "no_runbook"
    assert {r["fingerprint"] for r in _alerts(api)} == {"a", "noise"}  # nothing of the refused payload


def _arrival(alerts: list[Any]) -> Any:
    from agent.daemon import _Arrival

    return _Arrival(alerts)


def _noise() -> list[Any]:
    return [IncomingAlert.build("generic", "firing", {"alertname": "Noise"}, {}, "noise")]


def _alerts(api: Api) -> list[dict[str, Any]]:
    return [{"fingerprint": row[0]} for row in api.daemon.state.query("SELECT fingerprint FROM alerts")]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 202),
        ("application/json; charset=utf-8", 202),
        ("application/vnd.alert+json", 202),
        ("text/plain", 422),
        ("application/x-www-form-urlencoded", 422),
        (None, 422),
    ],
)
def test_intake_takes_json_bodies_only(api: Api, content_type: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {INTAKE}"} | ({"Content-Type": content_type} if content_type else {})
    response = api.client.post("/v1/alerts", content=b'{"name": "Noise"}', headers=headers)
    assert response.status_code == status, response.text
    if status == 422:
        assert "JSON body" in response.json()["detail"] and api.daemon.state.alert_count() == 0


def test_intake_bodies_keep_fastapis_422_and_a_byte_order_mark_is_fine(api: Api) -> None:
    headers = {"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"}
    response = api.client.post("/v1/alerts", content=b"\xef\xbb\xbf" + b'{"name": "Noise"}', headers=headers)
    assert response.status_code == 202, response.text
    response = api.client.post("/v1/alerts", content=b'{"name": 5, "nope": 1}', headers=headers)
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["errors"]]
    assert ["body", "name"] in locs and ["body", "nope"] in locs  # located under "body", as FastAPI does


def test_the_intake_bodies_are_described_in_openapi_with_references_that_resolve(api: Api) -> None:
    document = api.get("/openapi.json").json()
    text = json.dumps(document)
    assert '"#/$defs/' not in text  # a model's own $defs would not resolve from the document's root
    for path, field in (("/v1/alerts", "name"), ("/v1/alerts/alertmanager", "alerts")):
        operation = document["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"] and "422" in operation["responses"]
    alert = document["paths"]["/v1/alerts/alertmanager"]["post"]["requestBody"]["content"]["application/json"]
    assert "labels" in alert["schema"]["properties"]["alerts"]["items"]["properties"]


def test_a_storm_group_is_parsed_off_the_event_loop(api: Api, monkeypatch) -> None:
    import threading

    from agent import api as api_module

    where: dict[str, set[int]] = {"build": set(), "loop": set()}
    build, take = IncomingAlert.build.__func__, api_module._AlertRate.take  # type: ignore[attr-defined]

    def noting_build(cls: Any, *args: Any, **kwargs: Any) -> Any:
        where["build"].add(threading.get_ident())
        return build(cls, *args, **kwargs)

    def noting_take(self: Any, *args: Any) -> Any:
        where["loop"].add(threading.get_ident())  # the rate limit is taken on the event loop
        return take(self, *args)

    monkeypatch.setattr(IncomingAlert, "build", classmethod(noting_build))
    monkeypatch.setattr(api_module._AlertRate, "take", noting_take)
    storm = am([firing(i, service="app", n=str(i)) for i in range(2000)])
    assert api.post("/v1/alerts/alertmanager", storm).status_code == 202
    assert where["build"] and where["loop"] and not where["build"] & where["loop"]
    where["build"].clear()
    where["loop"].clear()
    assert api.post("/v1/alerts/alertmanager", am([firing(1, service="app")])).status_code == 202
    assert where["build"] == where["loop"]  # a small one is not worth a thread hand-off


def test_a_state_database_that_cannot_answer_is_a_retryable_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failover of the shared state: the payload is answered 503 with Retry-After (Alertmanager retries
    5xx, not 4xx), never 400, and nothing of it is recorded."""
    from agent.exceptions import StateUnavailable

    def down(*args: Any, **kwargs: Any) -> None:
        raise StateUnavailable("state database: terminating connection due to administrator command")

    api.daemon.start()
    try:
        monkeypatch.setattr(api.daemon.state, "record_intake", down)
        response = api.alert(service="app")
        assert response.status_code == 503 and response.headers["Retry-After"], response.text
        assert response.json()["code"] == "state_unavailable"
        monkeypatch.undo()
        assert api.alert(service="app").status_code == 202 and api.daemon.state.alert_count() == 1
    finally:
        api.daemon.stop(5)


def _agent(tmp_path: Path, name: str, *, workers: int) -> Daemon:
    """Another daemon on the same state (its own audit log), as a second agent would be."""
    settings = Settings(state_dir=tmp_path / "state", audit_log=tmp_path / f"{name}-audit.jsonl")
    return Daemon(
        load_runbooks([tmp_path / "runbooks"]), settings, Redactor(), policy=EnvironmentPolicy(), workers=workers
    )


def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_the_run_queue_is_shared_a_run_one_agent_queued_another_runs(tmp_path: Path) -> None:
    """The agent that admitted an alert cannot run it (no free worker here; or killed -9 after the
    commit): another agent on the same state takes the queued run, runs it once, and says so."""
    admitting = Api(tmp_path)  # never started: its workers never take anything
    response = admitting.alert(service="worker")
    (result,) = response.json()["results"]
    run_id = result["run_id"]
    assert admitting.daemon.state.run(run_id)["status"] == "queued"
    other = _agent(tmp_path, "other", workers=1)
    told: list[Any] = []
    other.incidents.after_run = lambda report, origin: told.append((report.run_id, origin))  # type: ignore[method-assign]
    other.start()
    try:
        _wait_for(lambda: other.state.run(run_id)["status"] == "finished")
    finally:
        other.stop(10)
    assert other.state.query("SELECT agent FROM runs WHERE run_id = ?", (run_id,)) == [(other.agent_id,)]
    assert other.state.run(run_id)["report"]["params"]["service"] == "worker"  # the alert's params, kept
    audit = (tmp_path / "other-audit.jsonl").read_text()
    assert '"event":"run_taken"' in audit.replace(" ", "") and admitting.daemon.agent_id in audit
    ((told_run, origin),) = told  # its incident hears of it as of the alert that queued it
    assert (told_run, origin.alert_name) == (run_id, "SvcDown")


def test_a_stopping_agent_leaves_its_queued_runs_to_a_live_one_or_else_interrupts_them(tmp_path: Path) -> None:
    Api(tmp_path)  # its runbooks
    first, alive = (_agent(tmp_path, name, workers=0) for name in ("first", "alive"))
    for daemon in (first, alive):
        daemon.start()

    def queue(daemon: Daemon, service: str) -> str:
        alert = IncomingAlert.build("generic", "firing", {"alertname": "SvcDown", "service": service}, {}, service)
        (result,) = daemon.receive([alert])
        assert result.run_id is not None
        return result.run_id

    first_run = queue(first, "app")
    first.stop(5)  # another agent is alive: the run stays queued, for it
    assert first.state.run(first_run)["status"] == "queued"
    second_run = queue(alive, "worker")
    alive.stop(5)  # the last agent of its mode: nobody would begin them, its own or the other's
    assert {alive.state.run(r)["status"] for r in (first_run, second_run)} == {"interrupted"}
    assert "daemon stopped before it began" in (tmp_path / "alive-audit.jsonl").read_text()


def test_a_queued_run_is_held_to_the_taking_agents_allow_list(tmp_path: Path) -> None:
    """During a rolling change an older agent (wider `allow`) admitted `service=db`; the agent that takes
    the run allows only app and worker: it never runs it, and its incident hears why."""
    admitting = Api(tmp_path)
    admitting.daemon.state.add_run(
        run_id="wide1",
        runbook="svc-down",
        target="service=db",
        mode="live",
        actor="alert:SvcDown:fp1",
        params={"service": "db"},
        status="queued",
        origin={"actor": "alert:SvcDown:fp1", "alert_name": "SvcDown", "severity": None, "started_at": None},
    )
    other = _agent(tmp_path, "other", workers=1)
    told: list[Any] = []
    other.incidents.after_run = lambda report, origin: told.append(report)  # type: ignore[method-assign]
    ran: list[Any] = []
    real_run = other.executor.run
    other.executor.run = lambda *a, **kw: ran.append(a) or real_run(*a, **kw)  # type: ignore[method-assign]
    other.start()
    try:
        _wait_for(lambda: bool(told))
    finally:
        other.stop(10)
    assert ran == [] and other.state.run("wide1")["status"] == "interrupted"
    (report,) = told
    assert report.status.value == "UNKNOWN" and "param service is not allowed" in report.checks[0].summary


def test_an_approval_names_the_plan_it_approves(api: Api) -> None:
    # Never "whatever is pending now": a plan replaced since (pending_plan_replaced) was never shown.
    response = api.post("/v1/runs/some-run/approve", {}, token=ALICE)
    assert response.status_code == 422 and "fingerprint" in response.json()["detail"]
    assert api.post("/v1/runs/some-run/approve", {"fingerprint": "f" * 16}, token=ALICE).status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/pause", {"reason": "freeze\x00"}),
        ("/v1/incidents/1/assign", {"commander": "bob\x00"}),
        ("/v1/incidents/1/note", {"text": "a\x00b"}),
        ("/v1/runs/r1/reject", {"reason": "\x00"}),
        ("/v1/breakers/reset", {"target": "container:app\x00"}),
    ],
)
def test_a_nul_in_what_people_send_is_a_422(api: Api, path: str, body: dict[str, str]) -> None:
    response = api.post(path, body, token=ALICE)
    assert response.status_code == 422, (path, response.text)
    assert api.daemon.state.paused() is None
