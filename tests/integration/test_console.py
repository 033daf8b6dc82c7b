"""The web console in a real browser: headless Chromium from Debian's packages, driven by Playwright
(pointed at the system browser), against a real daemon, a real fault and the real Docker engine.

A bad deploy raises the error rate; an alert starts `high-error-rate`, whose rollback waits for a
person. The person opens the incident from its link, is sent to sign in (the intake token does not
sign in), sees the incident, opens the run, approves a plan that has changed meanwhile (and is shown
the new one, nothing applied), approves that one, and sees it applied and verified. Every page passes
axe-core with no serious violation, fits a 360 px screen, and works by keyboard. Screenshots are kept
in artifacts/console/."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import faults, stack
from tests.integration.conftest import REPO
from tests.integration.harness import DECIDER, TOKEN
from tests.integration.harness import Daemon as RunningDaemon

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
ARTIFACTS = REPO / "artifacts" / "console"
SERIOUS = ("serious", "critical")


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed (sandbox/ensure-deps.sh installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _accessible(page: Any, name: str) -> None:
    """axe-core finds no serious or critical violation; the page fits 360 px; a screenshot is kept."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]
    assert serious == [], f"{name}: {serious}"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"{name}: the page is {width} px wide on a 360 px screen"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-screen.png"))  # what a phone shows first


def _tab_to(page: Any, text: str, presses: int = 60) -> None:
    """Keyboard only: Tab until the focused control's text starts with `text`."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement ? document.activeElement.innerText || '' : ''")
        if focused.strip().startswith(text):
            return
    raise AssertionError(f"{text!r} is not reachable by keyboard")


def test_the_console_takes_a_person_from_the_incident_to_an_applied_rollback(
    dc: Any, daemon_env: dict[str, str], restore: None, browser: Any
) -> None:
    good = dc.images.get(f"{stack.APP_IMAGE}:latest")
    good.tag(stack.APP_IMAGE, "previous")
    faults.deploy_app(dc, faults.build_bad_app(dc))
    assert faults.traffic(40).count(500) == 40
    daemon = RunningDaemon(daemon_env, REPO / "runbooks").start()
    try:
        run_id = daemon.alert("HighErrorRate", {"service": "app", "severity": "critical"})["run_id"]
        run = daemon.wait_run(run_id)
        assert run["report"]["remediations"][0]["decision"] == "pending", run["report"]["remediations"]
        (incident,) = [i for i in daemon.client.get("/v1/incidents").json() if i["runbook"] == "high-error-rate"]
        incident_url = f"{daemon.url}/ui/incidents/{incident['id']}"

        context = browser.new_context(viewport={"width": 360, "height": 780})
        context.set_default_timeout(180_000)  # an approval applies and verifies before it answers
        page = context.new_page()

        # No session, no page: the link from a notification leads to the sign-in, then back to it.
        page.goto(incident_url)
        assert "/ui/login" in page.url
        _accessible(page, "login")
        page.fill("#credential", TOKEN)  # the intake token delivers alerts; it does not sign in
        page.click("button[type=submit]")
        assert "not a decision credential" in page.content() and "/ui/login" in page.url
        page.fill("#credential", DECIDER)
        page.click("button[type=submit]")
        assert page.url == incident_url, page.url

        assert "High Error Rate" in page.content() and "INC-" in page.content()
        _accessible(page, "incident")
        cookie = next(c for c in context.cookies() if c["name"] == "runbook_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # A form posted without the session's CSRF token is refused, signed in or not.
        refused = context.request.post(f"{incident_url}/note", form={"text": "forged"})
        assert refused.status == 403
        assert "forged" not in daemon.client.get(f"/v1/incidents/{incident['id']}").text

        page.goto(f"{daemon.url}/ui/incidents")
        _accessible(page, "incidents")
        page.goto(f"{daemon.url}/ui/status")
        _accessible(page, "status")

        page.goto(incident_url)
        page.click(f"a[href='/ui/runs/{run_id}']")
        assert "Waiting for approval: rollback" in page.content()
        _accessible(page, "run-pending")
        shown = page.inner_text("section.pending code.fingerprint")

        # Meanwhile the world moves: "previous" is now another (good) build. The plan shown is stale.
        stale = dc.images.build(
            fileobj=io.BytesIO(f"FROM {stack.APP_IMAGE}:latest\nLABEL rbtest.console=stale\n".encode()),
            tag=f"{stack.APP_IMAGE}:previous",
            rm=True,
        )[0]
        assert stale.id != good.id
        page.focus("body")
        _tab_to(page, "Approve plan")
        with page.expect_navigation():
            page.keyboard.press("Enter")  # keyboard only
        assert "The plan changed since you saw it" in page.content()
        now_shown = page.inner_text("section.pending code.fingerprint")
        assert now_shown != shown
        assert dc.containers.get(stack.container_name("app")).image.tags == [
            f"{stack.APP_IMAGE}:bad"
        ]  # nothing applied

        with page.expect_navigation(url=f"**/ui/runs/{run_id}?done=approved"):
            page.click("section.pending button.primary")  # the plan now shown
        content = page.content()
        assert "Approved: the plan was applied and verified." in content and "resolved" in content, content[-3000:]
        _accessible(page, "run-applied")
        assert dc.containers.get(stack.container_name("app")).image.id == stale.id
        report = daemon.client.get(f"/v1/runs/{run_id}").json()["report"]
        rem = report["remediations"][0]
        assert (rem["decision"], rem["outcome"], rem["approver"]) == ("applied", "resolved", "console:alice"), rem
        audit = (Path(daemon_env["RUNBOOK_STATE_DIR"]) / "audit.jsonl").read_text()
        assert '"actor":"console:alice"' in audit.replace(" ", "")
        context.close()
    finally:
        daemon.stop()
        with_tag = [t for t in dc.images.get(f"{stack.APP_IMAGE}:previous").tags]
        if f"{stack.APP_IMAGE}:previous" in with_tag:
            good.tag(stack.APP_IMAGE, "previous")
