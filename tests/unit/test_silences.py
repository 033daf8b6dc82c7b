"""The Alertmanager silence client's own rules (exact matchers, bounded requests, credentials never shown)
and the remediator's use of it: made only for an alert Alertmanager has and nothing wider, never in a dry
run, ended at once when a fix fails and after a grace when it is verified, and never in the fix's way.
Against a stub Alertmanager here; against the real one in tests/integration/test_silences.py."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.audit import read_records
from agent.config import Settings
from agent.silences import MAX_MATCHERS, SilenceError, Silencer, check_url, matchers, rfc3339
from tests.unit import fake_effects
from tests.unit.test_remediate import Harness

LABELS = {"alertname": "ThingBroken", "service": "thing", "severity": "critical"}


class StubAlertmanager:
    """Alertmanager's silence API as far as the agent uses it, recording every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.alerts: list[dict[str, Any]] = [{"labels": dict(LABELS)}]
        self.silences: dict[str, dict[str, Any]] = {}
        self.fail_create = False
        self.slow = 0.0  # seconds before any answer
        self.slow_create = 0.0  # seconds before answering a create (made all the same)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                time.sleep(stub.slow)
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path, None))
                path = urlsplit(self.path).path
                if path == "/api/v2/alerts":
                    assert parse_qs(urlsplit(self.path).query)["filter"]
                    self._answer(200, stub.alerts)
                elif path == "/api/v2/silences":
                    self._answer(200, list(stub.silences.values()))
                else:
                    silence = stub.silences.get(path.rsplit("/", 1)[-1])
                    self._answer(200 if silence else 404, silence or "silence not found")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, body))
                if stub.fail_create:
                    return self._answer(400, "bad matchers")
                silence_id = body.get("id") or str(uuid.uuid4())
                stub.silences[silence_id] = {**body, "id": silence_id, "status": {"state": "active"}}
                time.sleep(stub.slow_create)
                self._answer(200, {"silenceID": silence_id})

            def do_DELETE(self) -> None:
                stub.requests.append(("DELETE", self.path, None))
                silence = stub.silences.get(self.path.rsplit("/", 1)[-1])
                if silence is None:
                    return self._answer(500, "silence not found")
                silence["status"]["state"] = "expired"
                self._answer(200, "")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


@pytest.fixture
def am() -> Iterator[StubAlertmanager]:
    stub = StubAlertmanager()
    yield stub
    stub.server.shutdown()


# --- the client ---------------------------------------------------------------------------------------


def test_one_exact_equality_matcher_per_label() -> None:
    assert matchers({"severity": "critical", "alertname": "AppDown"}) == [
        {"name": "alertname", "value": "AppDown", "isRegex": False, "isEqual": True},
        {"name": "severity", "value": "critical", "isRegex": False, "isEqual": True},
    ]
    assert matchers({"alertname": ".*"})[0]["isRegex"] is False  # a regex-looking value is matched literally


def test_no_labels_or_too_many_is_refused() -> None:
    with pytest.raises(SilenceError, match="no labels"):
        matchers({})
    with pytest.raises(SilenceError, match=f"at most {MAX_MATCHERS}"):
        matchers({f"l{i}": "v" for i in range(MAX_MATCHERS + 1)})


def test_times_are_rfc3339_in_utc() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"


def test_urls_that_would_mean_another_host_are_refused_without_quoting_them() -> None:
    for bad in (
        "am.example:9093",
        "http://runbook:1234/Zm9vYmFy@am:9093",  # a "/" in the password: host "runbook", port 1234
        "http://runbook:s3cr/et@am:9093",
        "http://am:99999",
        "http://am..example:9093",
        "http://am:9093/é",
        "http://am:9093/?x=1",
    ):
        with pytest.raises(ValueError, match="percent-encode") as info:
            check_url(bad)
        assert "Zm9vYmFy" not in str(info.value) and "s3cr" not in str(info.value)
    silencer = Silencer("https://runbook:s%40cret@am.example:9093/am/", connect_timeout=1, timeout=1)
    assert silencer.where == "https://am.example:9093/am"
    assert silencer._auth == "Basic cnVuYm9vazpzQGNyZXQ="  # runbook:s@cret
    assert Silencer("http://[::1]/", connect_timeout=1, timeout=1).where == "http://[::1]:80"


def test_an_alertmanager_that_is_not_there_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        silencer = Silencer(f"http://127.0.0.1:{port}", connect_timeout=2, timeout=2)
        with pytest.raises(SilenceError, match=f"http://127.0.0.1:{port}: .*refused"):
            silencer.create({"alertname": "X"}, starts=0, ends=60, comment="")


def test_a_slow_answer_is_cut_at_the_deadline(am: StubAlertmanager) -> None:
    am.slow = 5.0
    started = time.monotonic()
    with pytest.raises(SilenceError, match=r"no answer within 0\.5s"):
        Silencer(am.url, connect_timeout=0.5, timeout=0.5).create(LABELS, starts=0, ends=60, comment="")
    assert time.monotonic() - started < 4.5  # not the stub's 5 s


def test_the_others_a_silence_would_mute_are_counted(am: StubAlertmanager) -> None:
    silencer = Silencer(am.url, connect_timeout=2, timeout=5)
    assert silencer.others(LABELS) == (1, 0)
    am.alerts.append({"labels": {**LABELS, "instance": "web-2"}})  # more labels: a silence of LABELS mutes it
    assert silencer.others(LABELS) == (1, 1)
    query = parse_qs(urlsplit(am.requests[-1][1]).query)
    assert sorted(query["filter"]) == ['alertname="ThingBroken"', 'service="thing"', 'severity="critical"']
    silencer.others({"alertname": 'a"b\\c'})
    assert parse_qs(urlsplit(am.requests[-1][1]).query)["filter"] == ['alertname="a\\"b\\\\c"']


# --- the remediator -----------------------------------------------------------------------------------


def silenced(h: Harness, am: StubAlertmanager, remediation: dict[str, Any], *, source: str = "alertmanager") -> Any:
    """A run started by an alert (recorded as the daemon records it), with `silence: true`."""
    run_id = uuid.uuid4().hex[:12]
    alert = {"source": source, "fingerprint": "f", "status": "firing", "name": LABELS["alertname"]}
    alert |= {"labels": LABELS, "annotations": {}, "runbook": "t", "target": "-", "disposition": "run_started"}
    h.state.record_intake([{**alert, "run_id": run_id}], [], [])
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, alertmanager_url=am.url)
    executor = h.executor({"silence": True, **remediation}, settings=settings)
    report = executor.run("t", actor="alert:ThingBroken:f", run_id=run_id)
    events = [r for r in read_records(h.audit_path) if r.get("run_id") == run_id and r["event"].startswith("silence")]
    return report.remediations[0], events


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    fake_effects.HEALTH["value"] = "CRITICAL"
    fake_effects.applied.clear()
    return Harness(tmp_path)


def test_verified_the_silence_ends_after_its_grace(h: Harness, am: StubAlertmanager) -> None:
    rem, events = silenced(
        h, am, {"with": {"heals": True}, "verify": ["health"], "verify_timeout": "5s", "silence_grace": "3m"}
    )
    assert rem.outcome == "resolved"
    assert [e["event"] for e in events] == ["silence_requested", "silence_created", "silence_ends"]
    # is the alert there, create; then is the silence still in force, move its end (same start, matchers)
    assert am.methods() == ["GET", "POST", "GET", "POST"]
    create, end = am.requests[1][2], am.requests[3][2]
    assert create["matchers"] == matchers(LABELS) and "id" not in create
    assert end["id"] == events[1]["silence_id"] and end["startsAt"] == create["startsAt"]
    assert end["matchers"] == create["matchers"]
    assert events[2]["ends_at"] == end["endsAt"] and abs(_epoch(end["endsAt"]) - (time.time() + 180)) < 30


def test_a_silence_a_person_ended_is_never_made_again(
    h: Harness, am: StubAlertmanager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def person_expires_it() -> None:
        for silence in am.silences.values():
            silence["status"]["state"] = "expired"

    monkeypatch.setattr(fake_effects, "DURING", [person_expires_it])
    rem, events = silenced(
        h, am, {"with": {"heals": True}, "verify": ["health"], "verify_timeout": "5s", "silence_grace": "3m"}
    )
    assert rem.outcome == "resolved" and am.methods() == ["GET", "POST", "GET"]  # looked, left it ended
    assert events[-1]["event"] == "silence_expired" and "had ended" in events[-1]["note"]


def test_a_create_whose_answer_is_lost_is_expired_after_the_fix(h: Harness, am: StubAlertmanager) -> None:
    am.slow_create = 6.0  # made, but answered after the agent's read_timeout (4s)
    rem, events = silenced(h, am, {})
    assert rem.outcome == "applied" and fake_effects.applied == ["thing:a"]
    assert [e["event"] for e in events] == ["silence_requested", "silence_failed", "silence_expired"]
    assert "no answer within" in events[1]["error"]
    (made,) = am.silences.values()
    assert made["status"]["state"] == "expired" and events[2]["silence_id"] == made["id"]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_failed_fix_or_no_grace_expires_it_at_once(h: Harness, am: StubAlertmanager) -> None:
    rem, events = silenced(h, am, {"with": {"fail": True}})
    assert rem.outcome == "apply_failed" and rem.escalation
    assert [e["event"] for e in events] == ["silence_requested", "silence_created", "silence_expired"]
    assert am.methods() == ["GET", "POST", "DELETE"] and am.requests[2][1].endswith(events[1]["silence_id"])
    assert Silencer(am.url, connect_timeout=1, timeout=5).expire("no-such-silence") is None  # gone is expired
    am.requests.clear()
    h.state.reset_breaker("thing:a")
    rem, events = silenced(h, am, {"verify": ["health"], "verify_timeout": "1s", "silence_grace": "3m"})
    assert rem.outcome == "not_resolved" and am.methods() == ["GET", "POST", "DELETE"]  # no grace for a failure
    am.requests.clear()
    h.state.reset_breaker("thing:a")
    rem, events = silenced(
        h, am, {"with": {"heals": True}, "verify": ["health"], "verify_timeout": "5s", "silence_grace": "0s"}
    )
    assert rem.outcome == "resolved" and am.methods() == ["GET", "POST", "DELETE"]


def test_nothing_wider_than_the_alert_and_only_an_alert_alertmanager_has(h: Harness, am: StubAlertmanager) -> None:
    am.alerts.append({"labels": {**LABELS, "instance": "web-2"}})
    rem, events = silenced(h, am, {})
    assert rem.outcome == "applied" and fake_effects.applied == ["thing:a"]  # the fix goes on
    assert [(e["event"], e["reason"]) for e in events] == [
        ("silence_skipped", "a silence of its labels would also mute 1 other alert(s)")
    ]
    am.alerts = []  # e.g. forged through the intake: Alertmanager never had it
    _, events = silenced(h, am, {})
    assert events[0]["reason"] == "Alertmanager has no such alert now"
    _, events = silenced(h, am, {}, source="api")
    assert events[0]["reason"] == "the run's alert came from api, not from Alertmanager"
    assert am.methods() == ["GET", "GET"]  # asked, never silenced


def test_a_silence_that_fails_never_stops_the_fix(
    h: Harness, am: StubAlertmanager, monkeypatch: pytest.MonkeyPatch
) -> None:
    am.fail_create = True
    rem, events = silenced(h, am, {})
    assert rem.outcome == "applied" and fake_effects.applied == ["thing:a"]
    assert events[-1]["event"] == "silence_failed" and "HTTP 400" in events[-1]["error"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Silencer, "others", broken)
    rem, events = silenced(h, am, {})
    assert rem.outcome == "applied" and events[-1]["error"] == "RuntimeError: a bug"
    assert fake_effects.applied == ["thing:a", "thing:a"]


def test_a_dry_run_never_speaks_to_alertmanager(h: Harness, am: StubAlertmanager) -> None:
    alert = {"source": "alertmanager", "fingerprint": "f", "status": "firing", "name": "ThingBroken"}
    alert |= {"labels": LABELS, "annotations": {}, "runbook": "t", "target": "-", "disposition": "run_started"}
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, alertmanager_url=am.url)
    for executor, dry_run in (
        (h.executor({"silence": True}, settings=settings), True),
        (h.executor({"silence": True}, settings=settings, dry_run=True), False),
    ):
        run_id = uuid.uuid4().hex[:12]  # a run of an alert
        h.state.record_intake([{**alert, "run_id": run_id}], [], [])
        rem = executor.run("t", actor="x", run_id=run_id, dry_run=dry_run).remediations[0]
        assert rem.decision == "planned_only"
    assert am.requests == [] and fake_effects.applied == []
