"""Incidents end to end with real parts: a game day (the app killed, a real Alertmanager alert, the incident
opened and told, the fix applied and verified, resolved and told, a post-mortem whose times are what
happened), and an escalation path that a kill -9 between two levels neither loses nor repeats."""

from __future__ import annotations

import json
import re
import signal
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox import faults
from tests.integration.conftest import REPO, cli
from tests.integration.harness import Daemon, alertmanager
from tests.integration.receivers import http_receiver

pytestmark = pytest.mark.integration


def policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def wait_incident(d: Daemon, predicate: Any, timeout: float = 120) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def found() -> bool:
        for row in d.client.get("/v1/incidents", params={"limit": 50}).json():
            if predicate(row):
                holder["incident"] = row
                return True
        return False

    assert faults.wait_for(found, timeout=timeout), d.client.get("/v1/incidents").json()
    return holder["incident"]


def timeline(markdown: str, near: float) -> dict[str, float]:
    """`- HH:MM:SS UTC - what` lines of a post-mortem, as Unix times by what: each on the day that puts it
    nearest to `near` (a test that runs across midnight reads 23:59:58 as yesterday's)."""
    day = datetime.fromtimestamp(near, UTC).date().isoformat()
    out = {}
    for hms, what in re.findall(r"^- (\d\d:\d\d:\d\d) UTC - (.+)$", markdown, re.MULTILINE):
        at = datetime.fromisoformat(f"{day}T{hms}+00:00").timestamp()
        out[what] = min((at - 86400, at, at + 86400), key=lambda t: abs(t - near))
    return out


def test_game_day_app_down_from_alert_to_postmortem(dc, daemon_env, tmp_path: Path, restore) -> None:
    with http_receiver() as chat:
        policy = policy_file(
            tmp_path,
            f"""
            channels:
              team-chat: {{type: slack, url: "{chat.url}"}}
            notify: [team-chat]
            escalation:
              - {{name: On-Call Engineer, notify: [team-chat], until: acknowledged}}
            """,
        )
        env = {**daemon_env, "RUNBOOK_POLICY": str(policy)}
        d = Daemon(env, REPO / "runbooks").start()
        try:
            with alertmanager(tmp_path, d.url) as am:
                faults.kill_app(dc)
                killed = time.time()
                am.fire("alertname=AppDown", "service=app", "severity=critical")
                incident = wait_incident(d, lambda i: i["runbook"] == "app-down" and i["status"] == "resolved")
                seen_resolved = time.time()
            assert faults.wait_for(lambda: any("🟢 Resolved" in t for t in chat.texts()), timeout=30), chat.texts()
        finally:
            d.stop()
        texts = chat.texts()
        opened = next(i for i, t in enumerate(texts) if "🔴 Investigating" in t)
        resolved = next(i for i, t in enumerate(texts) if "🟢 Resolved" in t)
        assert opened < resolved
        assert any("restart_app" in t and "applied" in t for t in texts[opened:resolved])
        assert incident["severity"] == "SEV-1" and incident["mitigated"]  # the runbook's SEV-1; fixed and verified

        out = tmp_path / "pm" / "postmortem.md"
        out.parent.mkdir()
        result = cli(env, "postmortem", str(incident["id"]), "-o", str(out))
        assert result.returncode == 0, result.stderr
        markdown = out.read_text()
        assert "Audit log verified" in markdown and "## Root Cause" in markdown and "## Action Items" in markdown
        times = timeline(markdown, near=killed)
        detected = next(t for what, t in times.items() if what.startswith("Issue detected"))
        fixed = next(t for what, t in times.items() if what.startswith("Fix applied"))
        done = times["Incident resolved"]
        # Within seconds of what happened: the alert fired as the app was killed; resolved before we saw it.
        assert abs(detected - killed) < 10
        assert killed - 1 <= fixed <= done <= seen_resolved + 1
        svg = out.with_name("postmortem-timeline.svg")
        assert svg.exists() and svg.read_text().startswith("<svg") and "container" in svg.read_text()
        assert "postmortem-timeline.svg" in markdown


def test_kill_9_between_escalation_levels_neither_loses_nor_repeats(dc, daemon_env, tmp_path: Path) -> None:
    with http_receiver() as oncall, http_receiver() as senior:
        policy = policy_file(
            tmp_path,
            f"""
            channels:
              oncall: {{type: webhook, url: "{oncall.url}"}}
              senior: {{type: webhook, url: "{senior.url}"}}
            escalation:
              - {{name: On-Call Engineer, notify: [oncall], after: 2s}}
              - {{name: Senior Engineer, notify: [senior], after: 15s}}
            """,
        )
        env = {**daemon_env, "RUNBOOK_POLICY": str(policy)}
        d = Daemon(env, REPO / "runbooks").start()
        try:
            opened = cli(env, "incident", "open", "--severity", "SEV-2", "--title", "Login not working", "--json")
            assert opened.returncode == 0, opened.stderr
            incident_id = json.loads(opened.stdout)["incident"]["id"]
            # The first level is the daemon's to page (on its clock, not at opening): it is, once.
            assert faults.wait_for(lambda: oncall.posts, timeout=20)
            d.proc.send_signal(signal.SIGKILL)  # between the two levels
            d.proc.wait()
            left = json.loads(cli(env, "incident", "show", str(incident_id), "--json").stdout)
            assert [p["level"] for p in left["escalations"]] == [1]  # the second not reached before the kill
            time.sleep(max(0.0, 16 - (time.time() - left["incident"]["episode"])))  # it falls due meanwhile
            d.start()
            assert faults.wait_for(lambda: senior.posts, timeout=30)
            time.sleep(4)  # ticks after the restart: nothing is sent again
        finally:
            d.stop()

        def escalated(receiver: Any) -> list[str]:
            # This incident's only: on a busy machine the daemon's own host-resources sweep may rightly
            # open another (its CPU check warns) and page the same channel.
            return [
                p["json"]["id"]
                for p in receiver.posts
                if p["json"]["event"] == "escalated" and p["json"]["id"].startswith(f"{incident_id}:")
            ]

        assert escalated(oncall) == [f"{incident_id}:escalated:0:1:0"]
        assert escalated(senior) == [f"{incident_id}:escalated:0:2:0"]
        shown = json.loads(cli(env, "incident", "show", str(incident_id), "--json").stdout)
        assert [(p["level"], p["name"]) for p in shown["escalations"]] == [
            (1, "On-Call Engineer"),
            (2, "Senior Engineer"),
        ]
