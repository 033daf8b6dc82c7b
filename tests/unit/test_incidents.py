"""The incident's life with run reports made by hand: open, update, resolve, reopen, severity, people's
actions, escalation on the clock, targets, and the messages queued in the outbox."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog, read_records
from agent.exceptions import Conflict
from agent.incidents import IncidentPolicy, Incidents, RunOrigin
from agent.loader import LoadedRunbook, RunbookSet
from agent.models import CheckResult, RemediationDecision, RunReport
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.status import Status
from agent.templating import Templates
from tests.state_backend import open_state

SPEC = Runbook.model_validate(
    {
        "id": "app-down",
        "title": "Application Down",
        "severity": "SEV-2",
        "symptoms": ["Health checks failing", "502/503 errors"],
        "params": {"app_service": "app"},
        "alert_params": {"app_service": {"from": "labels.service", "allow": ["app", "<!channel> @here"]}},
        "checks": [{"id": "health", "check": "http.get", "with": {"url": "http://x"}}],
        "advice": ["Check resource limits."],
    }
)
CHAT = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}


def policy(**extra: Any) -> IncidentPolicy:
    return IncidentPolicy.model_validate({"channels": {"team": CHAT, "pager": CHAT}, "notify": ["team"], **extra})


def report(
    status: Status = Status.CRITICAL, *, final: Status | None = None, service: str = "app", **kw: Any
) -> RunReport:
    checks = [
        CheckResult(
            "health",
            "http.get",
            status,
            f"health {status.value}",
            120.0,
            code=None if status is Status.OK else "http_bad_status",
        )
    ]
    return RunReport(
        run_id=kw.pop("run_id", f"r{time.monotonic_ns()}"),
        runbook="app-down",
        title="Application Down",
        severity="SEV-2",
        mode="live",
        actor="test",
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        status=status,
        params={"app_service": service},
        checks=checks,
        final_status=final,
        **kw,
    )


class World:
    def __init__(self, tmp_path: Path, pol: IncidentPolicy | None = None) -> None:
        self.tmp_path = tmp_path
        self.state = open_state(tmp_path)
        self.audit_path = tmp_path / "audit.jsonl"
        runbooks = RunbookSet({"app-down": LoadedRunbook(SPEC, Path("x.yaml"))}, Templates(), Registry())
        self.incidents = Incidents(
            self.state, AuditLog(self.audit_path, Redactor()), pol or policy(), Redactor(), runbooks
        )

    def outbox(self, incident_id: int) -> list[tuple[str, str]]:
        return [(m.channel, m.event) for m in self.incidents.outbox.of_incident(incident_id)]

    def kinds(self, incident_id: int) -> list[str]:
        return [e.kind for e in self.incidents.store.events(incident_id)]


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


ALERT = RunOrigin("alert:AppDown:fp1", "AppDown", "warning", time.time() - 30)


def test_a_failing_run_opens_one_incident_and_says_so(w: World) -> None:
    incident = w.incidents.after_run(report(), ALERT)
    assert incident is not None and (incident.status, incident.severity, incident.target) == (
        "identified",
        "SEV-2",
        "app_service=app",
    )
    assert incident.detected < incident.declared and incident.identified is not None
    again = w.incidents.after_run(report(), ALERT)
    assert again is not None and again.id == incident.id  # the same incident, no twin
    assert w.kinds(incident.id) == ["opened", "run", "status", "run"]
    assert [e for _, e in w.outbox(incident.id)] == ["opened", "status"]  # 🔴, then 🟡: the cause is named
    opened, identified = w.incidents.outbox.of_incident(incident.id)
    assert "🔴 Investigating" in opened.body and "Health checks failing" in opened.body
    assert "🟡 Identified" in identified.body and "http_bad_status" in identified.body
    assert [r["event"] for r in read_records(w.audit_path)] == ["incident_opened", "incident_updated"]


def test_a_healthy_run_opens_nothing_and_resolves_what_was_open(w: World) -> None:
    assert w.incidents.after_run(report(Status.OK), ALERT) is None
    incident = w.incidents.after_run(report(), ALERT)
    assert incident is not None
    resolved = w.incidents.after_run(report(Status.OK), ALERT)
    assert resolved is not None and resolved.status == "resolved" and resolved.resolved
    assert ("team", "resolved") in w.outbox(incident.id)
    assert "🟢 Resolved" in w.incidents.outbox.of_incident(incident.id)[-1].body


def test_a_fix_applied_and_verified_mitigates_and_resolves(w: World) -> None:
    decision = RemediationDecision(
        "restart_app",
        "docker.restart",
        "auto",
        True,
        "when",
        decision="applied",
        applied=True,
        outcome="resolved",
        plan={"fingerprint": "f" * 16, "changes": [{"summary": "restart container sandbox-app-1"}]},
    )
    incident = w.incidents.after_run(report(final=Status.OK, remediations=[decision]), ALERT)
    assert incident is not None and incident.status == "resolved"
    assert incident.mitigated is not None and incident.identified is not None
    assert [k for k in w.kinds(incident.id) if k in ("status", "applied")] == ["status", "applied", "status", "status"]
    assert [e for _, e in w.outbox(incident.id)] == ["opened", "applied", "resolved"]
    text = w.incidents.update_text(incident.id, "internal")
    assert "Actions Taken:\n- restart_app: resolved - restart container sandbox-app-1" in text


def test_pending_approval_message_carries_the_plan_and_the_commands(w: World) -> None:
    decision = RemediationDecision(
        "rollback",
        "docker.rollback",
        "manual",
        True,
        "when",
        decision="pending",
        plan={"fingerprint": "3f0c9a1e2b7d4c55", "changes": [{"summary": "recreate sandbox-app-1 from app:previous"}]},
    )
    incident = w.incidents.after_run(report(remediations=[decision], run_id="run123"), ALERT)
    assert incident is not None
    pending = next(m for m in w.incidents.outbox.of_incident(incident.id) if m.event == "pending")
    assert "runbook approve run123 --plan 3f0c9a1e2b7d4c55" in pending.body
    assert "POST /v1/runs/run123/approve" in pending.body and "recreate sandbox-app-1" in pending.body
    assert "approve rollback: runbook approve run123 --plan 3f0c9a1e2b7d4c55" in w.incidents.update_text(
        incident.id, "internal"
    )


def test_a_resolved_incident_failing_again_soon_is_reopened(w: World) -> None:
    first = w.incidents.after_run(report(), ALERT)
    assert first is not None
    w.incidents.resolve(first.id, "alice")
    again = w.incidents.after_run(report(), ALERT)
    assert again is not None and again.id == first.id and again.status != "resolved"
    assert "reopened" in w.kinds(first.id)
    late = World(w.tmp_path / "late", policy(incidents={"reopen_window": "1ms"}))
    one = late.incidents.after_run(report(), ALERT)
    assert one is not None
    late.incidents.resolve(one.id, "alice")
    time.sleep(0.01)
    two = late.incidents.after_run(report(), ALERT)
    assert two is not None and two.id != one.id  # past the window: a new incident


def test_an_alerts_severity_raises_never_lowers(w: World) -> None:
    incident = w.incidents.after_run(report(), RunOrigin("alert:x", "AppDown", "critical"))
    assert incident is not None and incident.severity == "SEV-1"
    still = w.incidents.after_run(report(), RunOrigin("alert:x", "AppDown", "info"))
    assert still is not None and still.severity == "SEV-1"
    assert ("team", "severity") in w.outbox(incident.id)


def test_what_people_do(w: World) -> None:
    incident = w.incidents.open_by_person(
        title="Login not working", severity="SEV-2", impact="users cannot sign in", actor="alice"
    )
    assert (incident.source, incident.status, incident.runbook) == ("person", "investigating", None)
    acked = w.incidents.acknowledge(incident.id, "bob")
    assert acked.acknowledged and acked.commander == "bob"
    assert w.incidents.assign(incident.id, "carol", "bob").commander == "carol"
    w.incidents.note(incident.id, "talked to support", "carol")
    assert w.incidents.set_severity(incident.id, "SEV-1", "carol", "all users").severity == "SEV-1"
    done = w.incidents.resolve(incident.id, "carol", "fixed the SSO config")
    assert done.status == "resolved"
    with pytest.raises(Conflict):
        w.incidents.acknowledge(incident.id, "bob")
    assert w.kinds(incident.id) == ["opened", "acknowledged", "assigned", "note", "severity", "status"]
    events = [e for _, e in w.outbox(incident.id)]
    assert events == ["opened", "acknowledged", "assigned", "severity", "resolved"]


def test_the_escalation_path_on_the_clock(tmp_path: Path) -> None:
    pol = policy(
        escalation=[
            {"name": "On-Call Engineer", "notify": ["team"], "until": "acknowledged", "repeat": "2s"},
            {"name": "Senior Engineer", "notify": ["pager"], "after": "10s"},
            {"name": "Engineering Manager", "notify": ["pager"], "when": 'severity == "SEV-1"'},
            {"name": "CTO/VP Engineering", "notify": ["pager"], "when": "resolution_missed"},
        ],
        incidents={"severities": {"SEV-2": {"response": "5s", "resolution": "20s"}}},
    )
    w = World(tmp_path, pol)
    incident = w.incidents.after_run(report(), ALERT)
    assert incident is not None
    t0 = incident.declared

    def levels() -> list[tuple[int, int]]:
        return [(level, round_) for level, round_, _ in w.incidents.store.escalations(incident.id, None)]

    assert levels() == [(1, 0)]  # on-call at once, in the same write that opened it
    w.incidents.tick(t0 + 1)
    assert levels() == [(1, 0)]
    w.incidents.tick(t0 + 2.5)
    assert levels() == [(1, 0), (1, 1)]  # paged again: not acknowledged
    w.incidents.tick(t0 + 6)
    assert w.incidents.get(incident.id).response_missed  # 5 s response target missed
    w.incidents.acknowledge(incident.id, "bob")
    w.incidents.tick(t0 + 8.5)
    assert (1, 4) not in levels()  # the acknowledgement stopped the ladder
    # A restart (a new process on the same state) neither repeats nor loses a level.
    again = World(tmp_path, pol)
    again.incidents.tick(t0 + 11)
    again.incidents.tick(t0 + 11)
    assert [lv for lv in levels() if lv[0] == 2] == [(2, 0)]
    assert not [lv for lv in levels() if lv[0] in (3, 4)]  # SEV-2, resolution target not yet missed
    again.incidents.tick(t0 + 21)
    assert (4, 0) in levels()  # past the resolution target: the CTO
    pages = [m for m in w.incidents.outbox.of_incident(incident.id) if m.event == "escalated"]
    assert {m.channel for m in pages} == {"team", "pager"}
    assert len([m for m in pages if "Senior Engineer" in m.body]) == 2  # to pager, and to team (told of all)


def test_hostile_alert_text_is_inert_in_chat_and_email(tmp_path: Path) -> None:
    pol = IncidentPolicy.model_validate(
        {
            "channels": {
                "chat": {"type": "slack", "url": "http://127.0.0.1:9/hook"},
                "mail": {"type": "email", "host": "127.0.0.1", "from": "a@example.com", "to": ["b@example.com"]},
            },
            "notify": ["chat", "mail"],
        }
    )
    w = World(tmp_path, pol)
    incident = w.incidents.after_run(report(service="<!channel> @here"), ALERT)
    assert incident is not None
    bodies = {m.channel: m.body for m in w.incidents.outbox.of_incident(incident.id) if m.event == "opened"}
    assert "<!channel>" not in bodies["chat"] and "\u2039!channel\u203a" in bodies["chat"]
    assert "@here" not in bodies["chat"] and "@\u200bhere" in bodies["chat"]
    assert "`\u2039!channel\u203a @\u200bhere`" in bodies["chat"]  # a code span: no mention, no link inside
    assert "🔴 Investigating" in bodies["mail"]


def test_links_in_outside_text_are_defanged() -> None:
    from agent.notify.escape import for_chat, for_email

    assert (
        for_email("see https://evil.example/x and www.evil.example, mail bob@evil.com; v1.2 stays")
        == "see hxxps://evil[.]example/x and www[.]evil[.]example, mail bob@evil[.]com; v1.2 stays"
    )
    assert for_chat("[click](http://evil.example)") == "`[click](hxxp://evil.example)`"
    assert for_chat("`break` <http://x|y>") == "`'break' \u2039hxxp://x|y\u203a`"


def test_the_policy_file_says_where_it_is_wrong(tmp_path: Path) -> None:
    from agent.exceptions import ConfigError
    from agent.policy import load_incident_policy

    path = tmp_path / "policy.yaml"
    path.write_text(
        "channels:\n"
        "  chat: {type: slack, url: 'http://127.0.0.1:9/x'}\n"
        "  mail: {type: email, host: smtp, from: a@b, to: []}\n"
        "escalation:\n"
        "  - {name: On-Call Engineer, notify: [chat]}\n"
        "  - {name: Manager, notify: [chat], when: 'severty == \"SEV-1\"'}\n"
        "templates:\n"
        "  status_page: '{{ servise }}'\n"
    )
    with pytest.raises(ConfigError) as error:
        load_incident_policy(path)
    lines = error.value.message.splitlines()
    assert lines == [f"{path}:3: channels.mail.email.to: list should have at least 1 item after validation, not 0"]
    path.write_text(path.read_text().replace("to: []", "to: [x@y]"))
    with pytest.raises(ConfigError) as error:
        load_incident_policy(path)
    lines = error.value.message.splitlines()
    assert (
        lines[0]
        == f"{path}:6: escalation[1].when: unknown name 'severty' (available: "
        + ", ".join(
            sorted(["severity", "status", "acknowledged", "response_missed", "resolution_missed", "age", "runbook"])
        )
        + ")"
    )
    assert lines[1].startswith(f"{path}:8: templates.status_page: unknown name servise")
    path.write_text("escalation:\n  - {name: X, notify: [nowhere]}\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: escalation\[0\].notify: unknown channel nowhere"):
        load_incident_policy(path)
    path.write_text("notify: []\nincidents:\n  reopen_window: 1h\n  reopen_window: 2h\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: incidents.reopen_window: duplicate key"):
        load_incident_policy(path)


def test_a_secret_file_is_read_beside_the_policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.policy import load_incident_policy

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "chat-url").write_text("http://127.0.0.1:9/hooks/secret-token\n")
    path = tmp_path / "policy.yaml"
    path.write_text("channels:\n  chat: {type: slack, url_file: secrets/chat-url}\n")
    monkeypatch.chdir("/")  # not where the policy file is
    chat = load_incident_policy(path).channels["chat"]
    assert chat.url.get_secret_value() == "http://127.0.0.1:9/hooks/secret-token"


def test_a_postmortem_states_a_broken_audit_chain_at_the_top(w: World) -> None:
    from agent.incidents.postmortem import draft_postmortem

    decision = RemediationDecision(
        "restart_app", "docker.restart", "auto", True, "when", decision="applied", applied=True, outcome="resolved"
    )
    incident = w.incidents.after_run(report(final=Status.OK, remediations=[decision]), ALERT)
    assert incident is not None
    good = draft_postmortem(w.incidents, incident.id, w.audit_path, "t.svg")
    assert good.markdown.splitlines()[2].startswith("> Audit log verified")
    assert "## Timeline" in good.markdown and "Incident resolved" in good.markdown
    assert good.svg.startswith("<svg") and "INC-" in good.svg
    lines = w.audit_path.read_text().splitlines(keepends=True)
    w.audit_path.write_text("".join(lines[1:]))  # a record removed
    broken = draft_postmortem(w.incidents, incident.id, w.audit_path, "t.svg")
    assert broken.markdown.splitlines()[2].startswith("> **The audit log does NOT verify")


def test_a_late_approval_does_not_reopen_a_resolved_incident(w: World) -> None:
    pending = RemediationDecision(
        "rollback", "docker.rollback", "manual", True, "w", decision="pending", plan={"fingerprint": "f", "changes": []}
    )
    incident = w.incidents.after_run(report(remediations=[pending], run_id="late1"), ALERT)
    assert incident is not None
    w.incidents.alert_resolved("app-down", "app_service=app", "alert:x")
    applied = RemediationDecision(
        "rollback", "docker.rollback", "manual", True, "w", decision="applied", applied=True, outcome="applied"
    )
    after = w.incidents.after_decision("late1", applied, "alice")
    assert after is not None and after.status == "resolved" and not after.is_open
    assert "applied" in w.kinds(incident.id)  # the timeline still hears of it


def test_a_reopened_incident_pages_again_from_the_start(tmp_path: Path) -> None:
    pol = policy(escalation=[{"name": "On-Call Engineer", "notify": ["pager"], "until": "acknowledged"}])
    w = World(tmp_path, pol)
    incident = w.incidents.after_run(report(), ALERT)
    assert incident is not None
    w.incidents.acknowledge(incident.id, "bob")
    w.incidents.resolve(incident.id, "bob")
    again = w.incidents.after_run(report(), ALERT)
    assert again is not None and again.id == incident.id and again.life == 1
    assert again.acknowledged is None and again.episode > incident.declared
    pages = sorted({m.event_key for m in w.incidents.outbox.of_incident(incident.id) if m.event == "escalated"})
    assert pages == [f"{incident.id}:escalated:0:1:0", f"{incident.id}:escalated:1:1:0"]


def test_overriding_one_target_keeps_the_guides_other() -> None:
    settings = IncidentPolicy.model_validate({"incidents": {"severities": {"SEV-1": {"response": "1m"}}}}).incidents
    assert (settings.target("SEV-1").response, settings.target("SEV-1").resolution) == (60.0, 3600.0)
    assert settings.target("SEV-2").resolution == 4 * 3600.0


def test_a_failing_condition_or_template_never_loses_the_incident(tmp_path: Path) -> None:
    pol = policy(
        escalation=[
            {"name": "Team", "notify": ["team"], "when": "age / 0 > 1"},
            {"name": "Pager", "notify": ["pager"]},
        ],
        templates={"internal": "{{ actions[0] }}"},
    )
    w = World(tmp_path, pol)
    incident = w.incidents.open_by_person(title="Login", severity="SEV-2", impact="x", actor="alice")
    w.incidents.tick()
    w.incidents.tick()
    assert [lv for lv, _, _ in w.incidents.store.escalations(incident.id, None)] == [2]  # the other level pages
    assert w.kinds(incident.id).count("policy_error") == 1  # said once, not every tick
    opened = w.incidents.outbox.of_incident(incident.id)[0]
    assert "[SEV-2] Incident: Login" in opened.body  # the guide's template stood in


def test_two_processes_never_open_twin_incidents(tmp_path: Path) -> None:
    import threading

    worlds = [World(tmp_path) for _ in range(2)]  # two stores on one file: the CLI and the daemon
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run(world: World) -> None:
        barrier.wait()
        for _ in range(10):
            results.append(world.incidents.after_run(report(), ALERT))

    threads = [threading.Thread(target=run, args=(world,)) for world in worlds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.id for r in results}) == 1
    assert len(worlds[0].incidents.store.find(status=None)) == 1


def test_retention_takes_resolved_incidents_whole_and_keeps_open_ones(w: World) -> None:
    gone = w.incidents.after_run(report(), ALERT)
    assert gone is not None
    w.incidents.resolve(gone.id, "bob")
    kept = w.incidents.after_run(report(service="<!channel> @here"), ALERT)
    assert kept is not None and kept.id != gone.id
    later = time.time() + 1
    counts = w.state.prune(alerts_before=0, runs_before=later, actions_before=0)
    assert counts["incidents"] == 1 and counts["incident_events"] > 0 and counts["notifications"] > 0
    assert w.incidents.store.get(gone.id) is None and w.incidents.outbox.of_incident(gone.id) == []
    assert w.incidents.store.escalations(gone.id, None) == []
    assert w.incidents.store.get(kept.id) is not None and w.kinds(kept.id)[0] == "opened"
    assert w.incidents.outbox.of_incident(kept.id)  # undelivered messages of an open incident stay


def test_a_nested_write_that_fails_leaves_the_outer_one_whole(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    with state.write() as db:
        db.execute("INSERT INTO flags (name, value, at, actor) VALUES ('outer', 'x', 0, 't')")
        with pytest.raises(RuntimeError), state.write() as inner:
            inner.execute("INSERT INTO flags (name, value, at, actor) VALUES ('inner', 'x', 0, 't')")
            raise RuntimeError("the nested update failed")
        with state.write() as inner:
            inner.execute("INSERT INTO flags (name, value, at, actor) VALUES ('after', 'x', 0, 't')")
    assert sorted(r[0] for r in state.query("SELECT name FROM flags")) == ["after", "outer"]


def test_a_postmortem_keeps_outside_text_from_making_markdown(w: World) -> None:
    from agent.incidents.postmortem import draft_postmortem

    hostile = "x\n# Owned [click](https://evil.example) ![img](https://evil.example/p.png) <b>hi</b>"
    incident = w.incidents.open_by_person(title=hostile, severity="SEV-3", impact=hostile, actor="alice")
    w.incidents.acknowledge(incident.id, "[me](https://evil.example)")
    md = draft_postmortem(w.incidents, incident.id, w.audit_path, "t.svg").markdown
    assert md.count("](") == 1 and f"![Timeline of INC-{incident.id}](t.svg)" in md  # no link but its own
    assert "\n# Owned" not in md and "<b>" not in md and "https://" not in md
    assert r"\[click\]" in md and r"evil\[.\]example" in md  # still there to read (as Markdown shows it)


def test_updates_list_the_latest_actions_and_a_bounded_chat_body(w: World) -> None:
    def applied(n: int) -> RemediationDecision:
        return RemediationDecision(
            f"fix_{n}",
            "docker.restart",
            "auto",
            True,
            "when",
            decision="applied",
            applied=True,
            outcome="not_resolved",
            plan={"fingerprint": "f" * 16, "changes": [{"summary": f"restart container app-{n}"}]},
        )

    def pending(n: int) -> RemediationDecision:
        return RemediationDecision(
            f"manual_{n}", "docker.rollback", "manual", True, "when", decision="pending", plan={"fingerprint": "a" * 16}
        )

    incident = None
    for n in range(12):
        incident = w.incidents.after_run(report(remediations=[applied(n), pending(n)], run_id=f"run{n}"), ALERT)
    assert incident is not None
    text = w.incidents.update_text(incident.id, "internal")
    assert f"(7 earlier: runbook incident show {incident.id})" in text and "fix_11" in text and "fix_6" not in text
    assert "manual_4" in text and "manual_5" not in text and "(7 more approvals waiting" in text
    long = {**w.incidents.view(incident), "title": "x" * 5_000, "impact": "y" * 5_000}
    chat = w.incidents.book.notification("status", long, {"why": "z" * 3_000}, "chat")
    assert len(chat.body) <= 1_900 and chat.body.endswith(f"(cut: runbook incident show {incident.id})")
