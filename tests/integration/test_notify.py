"""Notifications through real channels on 127.0.0.1: an SMTP server with STARTTLS and AUTH, HTTP receivers
for the Slack-style and signed webhooks; the outbox delivering past a dead channel, retrying, auditing."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from datetime import datetime
from email import message_from_string
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog, read_records
from agent.incidents import IncidentPolicy, Incidents, RunOrigin
from agent.models import CheckResult, RunReport
from agent.notify.channels import DeliveryError, EmailChannel, Message, send
from agent.notify.outbox import Courier
from agent.redaction import Redactor
from agent.state import StateStore
from agent.status import Status
from tests.integration.receivers import SmtpReceiver, http_receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp(tmp_path: Path):
    receiver = SmtpReceiver(tmp_path)
    yield receiver
    receiver.close()


def email(smtp: SmtpReceiver, password: str) -> EmailChannel:
    return EmailChannel.model_validate(
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "starttls",
            "username": smtp.user,
            "password": password,
            "ca_file": str(smtp.ca_file),
            "from": "runbook@example.com",
            "to": ["oncall@example.com"],
        }
    )


def test_email_over_starttls_with_auth(smtp: SmtpReceiver) -> None:
    send(email(smtp, smtp.password), Message("opened", "[SEV-1] INC-1 opened", "🔴 Investigating: app"))
    (received,) = smtp.messages
    assert received["tls"] and received["to"] == ["oncall@example.com"]
    assert "Subject: [SEV-1] INC-1 opened" in received["data"] and "text/plain" in received["data"]
    with pytest.raises(DeliveryError, match="SMTP 535"):
        send(email(smtp, "wrong-password"), Message("opened", "s", "b"))


def test_email_of_hostile_text_links_nowhere(smtp: SmtpReceiver, tmp_path: Path) -> None:
    channel = email(smtp, smtp.password).model_dump(by_alias=True, mode="json")
    channel["password"] = smtp.password
    policy = IncidentPolicy.model_validate({"channels": {"mail": channel}, "notify": ["mail"]})
    incidents = Incidents(
        StateStore(tmp_path / "s.sqlite3"), AuditLog(tmp_path / "a.jsonl", Redactor()), policy, Redactor()
    )
    incidents.open_by_person(
        title="Reset at https://evil.example/login or www.evil.example",
        severity="SEV-2",
        impact="mail bob@evil.example; see evil.example.com",
        actor="alice",
    )
    assert Courier(incidents.outbox, dict(policy.channels), incidents.audit, Redactor()).deliver("mail") == (1, 0)
    (received,) = smtp.messages
    mail = message_from_string(received["data"])
    body = mail.get_payload(decode=True).decode()
    for raw in ("https://", "www.evil", "evil.example", "bob@evil.example"):
        assert raw not in body and raw not in str(mail["Subject"]), raw
    assert "hxxps://evil[.]example/login" in body and "evil[.]example[.]com" in body  # still there to read


def test_slack_webhook_payload_pings_no_one(tmp_path: Path) -> None:
    with http_receiver() as receiver:
        policy = IncidentPolicy.model_validate(
            {"channels": {"chat": {"type": "slack", "url": receiver.url}}, "notify": ["chat"]}
        )
        incidents = Incidents(
            StateStore(tmp_path / "s.sqlite3"), AuditLog(tmp_path / "a.jsonl", Redactor()), policy, Redactor()
        )
        incident = incidents.open_by_person(
            title="<!channel> @here [click](https://evil.example) <https://evil.example|login>",
            severity="SEV-2",
            impact="@everyone ping",
            actor="alice",
        )
        sent, failed = Courier(incidents.outbox, dict(policy.channels), incidents.audit, Redactor()).deliver("chat")
        assert (sent, failed) == (1, 0) and incident.id
        (post,) = receiver.posts
        text = post["json"]["text"]
        assert post["json"]["allowed_mentions"] == {"parse": []}
        for raw in ("<!channel>", "@here", "@everyone", "https://evil", "<https://"):
            assert raw not in text, raw
        assert "🔴 Investigating" in text


def test_signed_webhook_signs_like_the_daemon_checks(tmp_path: Path) -> None:
    secret = "webhook-hmac-secret"
    with http_receiver() as receiver:
        channel = IncidentPolicy.model_validate(
            {"channels": {"hook": {"type": "webhook", "url": receiver.url + "?team=ops", "secret": secret}}}
        ).channels["hook"]
        send(channel, Message("opened", "subject", "body", 7, key="7:12:0:opened"))
        (post,) = receiver.posts
        stamp, signature = post["headers"]["X-Runbook-Timestamp"], post["headers"]["X-Runbook-Signature"]
        expected = hmac.new(secret.encode(), f"{stamp}.POST.{post['path']}.".encode() + post["body"], hashlib.sha256)
        assert signature == f"sha256={expected.hexdigest()}" and post["path"] == "/hook?team=ops"
        assert abs(time.time() - int(stamp)) < 60
        assert post["json"]["id"] == post["headers"]["X-Runbook-Event"] == "7:12:0:opened"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failing_report() -> RunReport:
    return RunReport(
        run_id="r1",
        runbook="svc",
        title="Service down",
        severity="SEV-2",
        mode="live",
        actor="t",
        started_at="2026-11-29T10:00:00+00:00",
        status=Status.CRITICAL,
        checks=[CheckResult("health", "http.get", Status.CRITICAL, "refused", 5.0, code="http_unreachable")],
    )


def test_a_dead_channel_delays_no_other_and_is_retried(tmp_path: Path) -> None:
    with http_receiver() as good, http_receiver(status=500) as broken, http_receiver(delay=5) as hanging:
        channels: dict[str, Any] = {
            "good": {"type": "webhook", "url": good.url},
            "broken": {"type": "webhook", "url": broken.url},
            "refused": {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/hook"},
            "hanging": {"type": "webhook", "url": hanging.url, "timeout": 3},
        }
        policy = IncidentPolicy.model_validate({"channels": channels, "notify": list(channels)})
        audit_path = tmp_path / "a.jsonl"
        incidents = Incidents(StateStore(tmp_path / "s.sqlite3"), AuditLog(audit_path, Redactor()), policy, Redactor())
        incident = incidents.after_run(failing_report(), RunOrigin("alert:x"))
        assert incident is not None
        courier = Courier(incidents.outbox, dict(policy.channels), incidents.audit, Redactor())
        courier.start()
        try:
            # The good channel hears of it while the others fail, refuse and hang.
            deadline = time.monotonic() + 30
            while len(good.posts) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            # Opened (🔴) and identified (🟡): both, once each.
            assert sorted(p["json"]["event"] for p in good.posts) == ["opened", "status"]
            while (
                time.monotonic() < deadline
                and len([r for r in read_records(audit_path) if r["event"] == "notification_attempt"]) < 4
            ):
                time.sleep(0.1)
        finally:
            courier.stop()
        by_channel = {m.channel: m for m in incidents.outbox.of_incident(incident.id) if m.event == "opened"}
        assert by_channel["good"].status == "sent"
        assert "HTTP 500" in (by_channel["broken"].last_error or "")
        assert "refused" in (by_channel["refused"].last_error or "").lower()
        assert "timed out" in (by_channel["hanging"].last_error or "").lower()
        assert all(by_channel[c].status == "pending" for c in ("broken", "refused", "hanging"))  # to be retried
        attempts = [r for r in read_records(audit_path) if r["event"] == "notification_attempt"]
        assert {(r["channel"], r["outcome"]) for r in attempts} >= {("good", "sent"), ("broken", "retrying")}
        # Not held up: both of the good channel's messages were answered before the hanging channel gave up
        # on its first (a 3 s timeout; one courier for all channels would have sent them after it).
        hung = min(
            datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
            for r in attempts
            if r["channel"] == "hanging"
        )
        assert max(p["at"] for p in good.posts) < hung
        # Retried once it is due again (the receiver now answers): delivered, and only once.
        broken.status = 200
        with incidents.state.write() as db:
            db.execute("UPDATE outbox SET next_attempt = 0 WHERE channel = 'broken'")
        again = Courier(incidents.outbox, dict(policy.channels), incidents.audit, Redactor())  # a stopped one stays so
        assert again.deliver("broken") == (2, 0)
        assert again.deliver("broken") == (0, 0) and len(broken.posts) == 4  # the failed tries, then those sent
        assert len(good.posts) == 2  # never sent twice


def test_the_same_event_is_queued_once_per_channel(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "s.sqlite3")
    from agent.notify.outbox import Outbox

    for _ in range(3):
        with state.write() as db:
            Outbox.enqueue(
                db, incident_id=1, event_key="1:5:0:opened", channel="c", event="opened", subject="s", body="b"
            )
    assert len(Outbox(state).of_incident(1)) == 1
    assert json.dumps([m.event_key for m in Outbox(state).of_incident(1)]) == '["1:5:0:opened"]'
