"""The console's rules in-process (no browser): no session, no page; sign-in with a decision credential
only; cookies HttpOnly, SameSite=Strict, Secure over TLS; CSRF on every form; security headers; alert
text escaped; a changed plan shown, never applied. The browser test is tests/integration/test_console.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.alerts import IncomingAlert
from agent.api import create_app
from tests.unit.test_api import ALICE, INTAKE, Api


def _login_form(client: TestClient) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def _client(api: Api, base_url: str = "http://testserver", address: str = "127.0.0.1") -> TestClient:
    """The console as a browser on this host reaches it (plain HTTP from loopback), unless told."""
    return TestClient(create_app(api.daemon, api.security), base_url=base_url, client=(address, 50000))


def _signed_in(api: Api) -> TestClient:
    client = _client(api)
    token = _login_form(client)
    response = client.post(
        "/ui/login", data={"csrf": token, "credential": ALICE, "next": "/ui/status"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/status", response.text
    return client


def _csrf(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path)


def test_no_session_no_page_and_no_action(api: Api) -> None:
    client = _client(api)
    for path in ("/ui/incidents", "/ui/incidents/1", "/ui/runs/x", "/ui/status", "/ui/incidents/1/timeline.svg"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next="), path
    for path in ("/ui/pause", "/ui/incidents/1/note", "/ui/runs/x/approve", "/ui/logout"):
        assert client.post(path, data={"csrf": "x"}).status_code == 403, path
    assert api.daemon.state.paused() is None
    # Nor with an API bearer token: the console's pages take a session, nothing else.
    response = client.get("/ui/status", headers={"Authorization": f"Bearer {ALICE}"}, follow_redirects=False)
    assert response.status_code == 303


def test_sign_in_takes_a_decision_credential_only(api: Api) -> None:
    client = _client(api)
    token = _login_form(client)
    for credential in (INTAKE, "nobody-knows-this-one", ""):
        response = client.post("/ui/login", data={"csrf": token, "credential": credential}, follow_redirects=False)
        assert response.status_code == 401 and "not a decision credential" in response.text
        assert "runbook_session" not in response.cookies
        token = re.search(r'name="csrf" value="([^"]+)"', response.text).group(1)  # type: ignore[union-attr]
    # Without the sign-in form's own token (a login CSRF): refused.
    fresh = _client(api)
    assert fresh.post("/ui/login", data={"csrf": "guess", "credential": ALICE}).status_code == 403
    response = client.post(
        "/ui/login", data={"csrf": token, "credential": ALICE, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert response.headers["location"] == "/ui/incidents"  # never sent to another site
    cookie = response.headers["set-cookie"]
    assert "runbook_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/ui" in cookie and "Max-Age=" in cookie and "Secure" not in cookie
    assert "console_signed_in" in api.settings.audit_path.read_text()


def test_the_cookies_are_secure_unless_on_this_host_over_plain_http(api: Api) -> None:
    client = _client(api, "https://testserver", "203.0.113.9")  # over TLS
    token = _login_form(client)
    response = client.post("/ui/login", data={"csrf": token, "credential": ALICE}, follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]
    # Plain HTTP from elsewhere (a TLS proxy in front, or a mistake): Secure too (the browser on plain
    # HTTP drops them, and signs in nowhere).
    page = _client(api, "http://testserver", "203.0.113.9").get("/ui/login")
    assert "Secure" in page.headers["set-cookie"]
    assert "came over plain HTTP" in page.text  # the person is told why signing in will not stick
    proxied = _client(api, "http://testserver", "203.0.113.9").get("/ui/login", headers={"X-Forwarded-Proto": "https"})
    assert "came over plain HTTP" not in proxied.text


def test_every_form_needs_its_csrf_token_and_actions_are_the_signed_in_persons(api: Api) -> None:
    client = _signed_in(api)
    assert client.post("/ui/pause", data={"reason": "no token"}).status_code == 403
    assert client.post("/ui/pause", data={"reason": "wrong", "csrf": "x" * 43}).status_code == 403
    assert client.post("/ui/pause", json={"reason": "json"}).status_code == 415
    assert api.daemon.state.paused() is None
    token = _csrf(client, "/ui/status")
    response = client.post("/ui/pause", data={"reason": "deploy freeze", "csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/status?done=paused"
    reason, by, _ = api.daemon.state.paused()  # type: ignore[misc]
    assert (reason, by) == ("deploy freeze", "console:alice")
    page = client.get("/ui/status?done=paused")
    assert "Remediation paused." in page.text and "Paused by console:alice" in page.text
    assert client.get("/ui/status?done=<script>").text.count("<script>") == 0  # fixed messages only


def test_pages_carry_security_headers_and_escape_alert_text(api: Api) -> None:
    hostile = "<script>alert(1)</script>{{ 7*7 }}"
    alert = IncomingAlert.build(
        "generic", "firing", {"alertname": "SvcDown", "service": "app"}, {"summary": hostile}, "f"
    )
    api.daemon.receive([alert])
    client = _signed_in(api)
    token = _csrf(client, "/ui/status")
    incident = _open_incident(api)
    client.post(f"/ui/incidents/{incident}/note", data={"text": hostile, "csrf": token})
    client.post(f"/ui/incidents/{incident}/assign", data={"commander": '"><script>x</script>', "csrf": token})
    page = client.get(f"/ui/incidents/{incident}")
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;{{ 7*7 }}" in page.text
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in page.text  # in an attribute too
    assert "&lt;b&gt;overloaded&lt;/b&gt;" in page.text  # a check's summary, as the run recorded it
    svg = client.get(f"/ui/incidents/{incident}/timeline.svg").text
    assert "<script" not in svg
    headers = page.headers
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src" not in csp  # no script at all
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert client.get("/ui/static/console.css").headers["content-type"].startswith("text/css")


def _open_incident(api: Api) -> int:
    from agent.incidents.service import RunOrigin
    from agent.models import CheckResult, RunReport
    from agent.status import Status

    report = RunReport(
        run_id="r1",
        runbook="svc-down",
        title="A service is down",
        severity="SEV-2",
        mode="live",
        actor="alert",
        started_at="2026-11-30T00:00:00+00:00",
        status=Status.CRITICAL,
        params={"service": "app"},
        checks=[CheckResult("load", "host.load", Status.CRITICAL, "<b>overloaded</b>", 1.0)],
    )
    api.daemon.state.add_run(run_id="r1", runbook="svc-down", target="-", mode="live", actor="alert", params={})
    api.daemon.state.set_run("r1", "finished", result="CRITICAL", report=report.to_json())
    incident = api.daemon.incidents.after_run(report, RunOrigin("alert", "SvcDown"))
    assert incident is not None
    return int(incident.id)


def test_incident_actions_from_the_console(api: Api) -> None:
    incident = _open_incident(api)
    client = _signed_in(api)
    token = _csrf(client, f"/ui/incidents/{incident}")
    for action, data in (
        ("ack", {}),
        ("assign", {"commander": "bob"}),
        ("severity", {"severity": "SEV-1", "reason": "customers"}),
        ("note", {"text": "looking"}),
        ("resolve", {"reason": "fixed"}),
    ):
        response = client.post(
            f"/ui/incidents/{incident}/{action}", data={**data, "csrf": token}, follow_redirects=False
        )
        assert response.status_code == 303, (action, response.text)
    found = api.daemon.incidents.get(incident)
    assert (found.commander, found.severity, found.status) == ("bob", "SEV-1", "resolved")
    assert (
        client.post(f"/ui/incidents/{incident}/severity", data={"severity": "SEV-9", "csrf": token}).status_code == 422
    )
    assert client.post(f"/ui/incidents/{incident}/note", data={"text": "", "csrf": token}).status_code == 422
    assert client.get("/ui/incidents/999").status_code == 404
    listed = client.get("/ui/incidents?status=resolved&severity=SEV-1")
    assert f"INC-{incident}" in listed.text and ("met (" in listed.text or "missed" in listed.text)
    assert f"INC-{incident}" not in client.get("/ui/incidents?status=open").text
    svg = client.get(f"/ui/incidents/{incident}/timeline.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert client.get(f"/ui/incidents/{incident}/postmortem.md").text.startswith("#")


FIX = """
id: fix-it
title: Fix it
severity: SEV-3
checks:
  - {id: load, check: host.load}
remediations:
  - {id: bounce, do: docker.restart, with: {container: app}, approval: manual}
"""


def test_an_approval_of_a_plan_that_changed_shows_the_new_plan_and_applies_nothing(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "fix.yaml").write_text(FIX)
    api = Api(tmp_path)
    api.daemon.state.add_run(run_id="r9", runbook="fix-it", target="-", mode="live", actor="a", params={})
    plan: dict[str, Any] = {
        "fingerprint": "new-plan-fp",
        "changes": [{"target": "container:app", "summary": "restart app"}],
    }
    api.daemon.state.add_pending("r9", "bounce", "new-plan-fp", plan)
    client = _signed_in(api)
    page = client.get("/ui/runs/r9")
    assert "Waiting for approval: bounce" in page.text and "new-plan-fp" in page.text and "restart app" in page.text
    token = _csrf(client, "/ui/runs/r9")
    response = client.post(
        "/ui/runs/r9/approve", data={"remediation": "bounce", "fingerprint": "old-plan-fp", "csrf": token}
    )
    assert response.status_code == 409 and "The plan changed since you saw it" in response.text
    assert "new-plan-fp" in response.text  # the plan as it is now, to approve or not
    assert [p[2] for p in api.daemon.state.pending("r9")] == ["new-plan-fp"]  # still waiting for a person
    assert client.post("/ui/runs/r9/approve", data={"remediation": "bounce", "fingerprint": "x"}).status_code == 403
    response = client.post(
        "/ui/runs/r9/reject", data={"remediation": "bounce", "reason": "not now", "csrf": token}, follow_redirects=False
    )
    assert response.status_code == 303 and api.daemon.state.pending("r9") == []
    api.daemon.state.add_pending("r9", "gone", "fp", plan)  # a remediation the runbook no longer has
    response = client.post("/ui/runs/r9/reject", data={"remediation": "gone", "csrf": token})
    assert response.status_code == 409 and "no longer in runbook" in response.text


def test_sign_out_ends_the_session_on_the_server(api: Api) -> None:
    client = _signed_in(api)
    session = client.cookies["runbook_session"]
    kept = {"Cookie": f"runbook_session={session}"}  # the cookie, as someone kept it
    other = TestClient(client.app, client=("127.0.0.1", 50001))  # another browser, the same daemon
    assert other.get("/ui/status", headers=kept, follow_redirects=False).status_code == 200
    token = _csrf(client, "/ui/status")
    assert client.post("/ui/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert other.get("/ui/status", headers=kept, follow_redirects=False).status_code == 303
    assert "console_signed_out" in api.settings.audit_path.read_text()


def test_sessions_expire_and_are_bounded() -> None:
    import time

    from agent.console.sessions import Sessions

    sessions = Sessions(life=0.05, limit=2)
    first, _ = sessions.open("a")
    assert sessions.get(first) is not None
    time.sleep(0.1)
    assert sessions.get(first) is None  # expired
    ids = [sessions.open(p)[0] for p in ("b", "c", "d")]
    assert sessions.get(ids[0]) is None and sessions.get(ids[2]).person == "d"  # type: ignore[union-attr]
    assert sessions.get("x" * 500) is None and sessions.get(None) is None


def test_sign_in_is_bounded_and_slowed(api: Api) -> None:
    client = _client(api)
    big = client.post(
        "/ui/login",
        content=b"a" * 100_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413  # refused on its declared length, never read whole
    token = _login_form(client)
    for _ in range(5):
        response = client.post("/ui/login", data={"csrf": token, "credential": "wrong-token-xyz"})
        token = re.search(r'name="csrf" value="([^"]+)"', response.text).group(1)  # type: ignore[union-attr]
    response = client.post("/ui/login", data={"csrf": token, "credential": ALICE})
    assert response.status_code == 429  # five failures a minute from one address, then a wait


def test_a_link_from_a_notification_reloads_itself_to_send_the_strict_cookie(api: Api) -> None:
    client = _signed_in(api)
    bare = _client(api)  # the browser leaves a SameSite=Strict cookie out of a cross-site visit
    page = bare.get("/ui/status", headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert page.status_code == 200 and '<meta http-equiv="refresh" content="0">' in page.text
    assert "<script" not in page.text
    assert client.get("/ui/status", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_guesses_sent_at_once_are_each_counted(api: Api) -> None:
    # Ten wrong sign-ins in flight together from one address: five are answered, the rest refused, as
    # if they had come one by one (each is counted before its credential is looked at).
    import asyncio

    import httpx

    app = create_app(api.daemon, api.security)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    async def guesses() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as first:
            page = await first.get("/ui/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            form_cookie = {"runbook_login": page.cookies["runbook_login"]}

        async def sign_in(credential: str) -> int:
            first, second = f"csrf={token}&".encode(), f"credential={credential}".encode()

            async def slowly() -> AsyncIterator[bytes]:  # a form that arrives in two parts, as on a slow link
                yield first
                await asyncio.sleep(0.05)
                yield second

            # One browser tab each: a refused sign-in's new form does not change the others' cookie.
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", cookies=form_cookie) as tab:
                form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(first + second))}
                return (await tab.post("/ui/login", content=slowly(), headers=form)).status_code

        answers = await asyncio.gather(*(sign_in(f"wrong-{i:02d}-xyz") for i in range(10)))
        return [*answers, await sign_in(ALICE)]

    codes = asyncio.run(guesses())
    assert sorted(codes[:10]) == [401] * 5 + [429] * 5 and codes[10] == 429, codes


def test_a_nul_in_a_form_or_a_huge_id_is_refused_never_a_server_error(api: Api) -> None:
    # PostgreSQL's text cannot hold NUL (an error there, not a refusal); SQLite's integers stop at 64 bits.
    client = _signed_in(api)
    token = _csrf(client, "/ui/status")
    assert client.post("/ui/pause", data={"reason": "freeze\x00", "csrf": token}).status_code == 400
    assert api.daemon.state.paused() is None
    assert client.get("/ui/incidents/99999999999999999999").status_code == 422
    assert client.get("/ui/runs/a%00b").status_code == 422
