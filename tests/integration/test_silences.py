"""Alertmanager silences while a remediation works, against the real Alertmanager delivering to the real
daemon: the alert that started the run is silenced (exactly its labels) while the change is applied and
verified, and speaks again as soon as it is verified; every step is audited; an alert that did not come
from Alertmanager, or a remediation still waiting for a person, silences nothing."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import faults
from tests.integration.conftest import BOUNCE_RUNBOOK
from tests.integration.harness import Daemon, alertmanager, free_port

pytestmark = pytest.mark.integration

# The shared restart runbook, silencing the alert while it works.
RUNBOOK = (
    BOUNCE_RUNBOOK
    + """    silence: true
    silence_timeout: 5m
    silence_grace: {grace}
"""
)


def audit_of(env: dict[str, str], run_id: str) -> list[dict[str, Any]]:
    lines = (Path(env["RUNBOOK_STATE_DIR"]) / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("run_id") == run_id]


def when(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def silenced_by(am_url: str, alertname: str) -> set[str]:
    """The silences Alertmanager says mute the alert now."""
    alerts = httpx.get(f"{am_url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}, timeout=10).json()
    return {s for a in alerts for s in a["status"]["silencedBy"]}


def watching(am_url: str, alertname: str) -> tuple[set[str], Callable[[], None]]:
    """Watch, in a thread, which silences mute the alert, until the returned function is called."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(httpx.HTTPError):
                seen.update(silenced_by(am_url, alertname))
            done.wait(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(15)

    return seen, stop


def check_silence(am_url: str, records: list[dict[str, Any]], labels: dict[str, str], run_id: str) -> dict[str, Any]:
    """The run's silence: requested and created after the apply started, for exactly the alert's labels,
    until at most silence_timeout; ended after the verification. Returns Alertmanager's record of it."""
    events = [r["event"] for r in records]
    requested = next(r for r in records if r["event"] == "silence_requested")
    created = next(r for r in records if r["event"] == "silence_created")
    assert events.index("apply_started") < events.index("silence_requested") < events.index("silence_created")
    assert events.index("silence_created") < events.index("apply_finished")
    assert requested["matchers"] == labels
    # silence_timeout: 5m is the longest it could have lasted had the agent died
    assert 290 <= datetime.fromisoformat(created["ends_at"].replace("Z", "+00:00")).timestamp() - when(created) <= 310
    ended = next(r for r in records if r["event"] in ("silence_ends", "silence_expired"))
    assert events.index("verify") < events.index(ended["event"]) and ended["outcome"] == "resolved", events
    silence = httpx.get(f"{am_url}/api/v2/silence/{ended['silence_id']}", timeout=10).json()
    assert {m["name"]: m["value"] for m in silence["matchers"]} == labels
    assert all(m["isEqual"] and not m["isRegex"] for m in silence["matchers"])
    assert silence["createdBy"].startswith("runbook@") and run_id in silence["comment"]
    silence["ends"] = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00")).timestamp()
    silence["verified"] = when(next(r for r in records if r["event"] == "verify"))
    silence["first_id"] = created["silence_id"]
    return silence


def test_the_alert_is_silenced_while_its_fix_is_applied_and_verified(
    daemon_env: dict[str, str], tmp_path: Path, target: tuple[str, str]
) -> None:
    project, container = target
    runbooks = tmp_path / "silence-runbooks"
    runbooks.mkdir()
    for approval, alertname in (("auto", "BounceAuto"), ("manual", "BounceAsk")):
        grace = "2m" if approval == "auto" else "0s"
        (runbooks / f"{approval}.yaml").write_text(
            RUNBOOK.format(name=approval, approval=approval, alertname=alertname, target=container, grace=grace)
        )
    am_port = free_port()
    env = {
        **daemon_env,
        "RUNBOOK_COMPOSE_PROJECT": project,
        "RUNBOOK_ALERTMANAGER_URL": f"http://127.0.0.1:{am_port}",
    }
    d = Daemon(env, runbooks, "--dedup-window", "0").start()
    try:
        # An alert from the generic endpoint is not Alertmanager's to silence: the fix goes on, unsilenced.
        run = d.wait_run(d.alert("BounceAuto", {"service": "bounce"})["run_id"])
        assert run["report"]["remediations"][0]["outcome"] == "resolved"
        (skipped,) = [r for r in audit_of(env, run["run_id"]) if r["event"].startswith("silence_")]
        assert skipped["event"] == "silence_skipped" and "not from Alertmanager" in skipped["reason"]

        with alertmanager(tmp_path, d.url, port=am_port) as am:
            assert httpx.get(f"{am.url}/api/v2/silences", timeout=10).json() == []
            instance = uuid.uuid4().hex[:8]
            labels = {"alertname": "BounceAuto", "service": "bounce", "severity": "warning", "instance": instance}
            seen, stop = watching(am.url, "BounceAuto")
            since = time.time()
            am.fire(*(f"{k}={v}" for k, v in labels.items()))

            def runs_of(runbook: str) -> list[dict[str, Any]]:
                return [r for r in d.runs() if r["runbook"] == runbook and r["created"] >= since]

            assert faults.wait_for(lambda: bool(runs_of("bounce-auto")), timeout=60)
            run = d.wait_run(runs_of("bounce-auto")[0]["run_id"])
            stop()
            assert run["report"]["remediations"][0]["outcome"] == "resolved", run["report"]
            silence = check_silence(am.url, audit_of(env, run["run_id"]), labels, run["run_id"])
            assert silence["first_id"] in seen  # the alert was muted while its fix worked...
            # ...and stays so for silence_grace after it was verified, for Prometheus to resolve it.
            assert silence["status"]["state"] == "active"
            assert silence["verified"] + 110 <= silence["ends"] <= silence["verified"] + 130
            assert silence["id"] in silenced_by(am.url, "BounceAuto")

            # A remediation that waits for a person silences nothing until the person approves it; then
            # the silence is made from the run's alert as recorded, however long the wait was.
            asked = {"alertname": "BounceAsk", "service": "bounce", "severity": "critical"}
            am.fire(*(f"{k}={v}" for k, v in asked.items()))
            assert faults.wait_for(lambda: bool(runs_of("bounce-manual")), timeout=60)
            run = d.wait_run(runs_of("bounce-manual")[0]["run_id"])
            (pending,) = run["pending"]
            active = [
                s
                for s in httpx.get(f"{am.url}/api/v2/silences", timeout=10).json()
                if s["status"]["state"] == "active"
                and {"name": "alertname", "value": "BounceAsk"}.items()
                <= next(m for m in s["matchers"] if m["name"] == "alertname").items()
            ]
            assert active == []
            seen, stop = watching(am.url, "BounceAsk")
            ok = d.client.post(f"/v1/runs/{run['run_id']}/approve", json={"fingerprint": pending["fingerprint"]})
            stop()
            assert ok.status_code == 200 and ok.json()["outcome"] == "resolved", ok.text
            silence = check_silence(am.url, audit_of(env, run["run_id"]), asked, run["run_id"])
            assert silence["first_id"] == silence["id"] in seen
            # silence_grace: 0s: expired when verified, not at its timeout; the alert speaks again.
            assert silence["status"]["state"] == "expired"
            assert silence["verified"] - 1 <= silence["ends"] <= silence["verified"] + 15
            assert silenced_by(am.url, "BounceAsk") == set()
        logged = {line["event"] for line in d.log_lines()}
        assert {"silence_created", "silence_expired", "silence_skipped"} <= logged
    finally:
        d.stop()
