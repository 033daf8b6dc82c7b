"""The incident's life: opened by a run that ends not OK (or by a person), moved through the guide's statuses
by what runs, alerts, approvals and people do, escalated along the policy's path, and told to people through
the outbox. It is fed results (reports, decisions, alerts), never reaches into the executor."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.alerts import target_key
from agent.audit import AuditLog
from agent.exceptions import Conflict, NotFound
from agent.incidents.messages import Flavor, MessageBook, Trusted
from agent.incidents.policy import IncidentPolicy
from agent.incidents.store import Incident, IncidentStore
from agent.loader import RunbookSet
from agent.models import RemediationDecision, RunReport
from agent.notify.channels import EmailChannel, SlackChannel
from agent.notify.outbox import Outbox
from agent.redaction import Redactor
from agent.schema import Runbook
from agent.state import Db, StateStore
from agent.status import Status
from agent.templating import TemplateError, Templates

__all__ = ["Incidents", "RunOrigin", "incident_target"]

SHOWN = 5  # actions taken (the latest) and approvals waiting (the oldest) an update lists

_SEVERITY_ORDER = {"SEV-1": 1, "SEV-2": 2, "SEV-3": 3, "SEV-4": 4}
_STATUS_WORD = {"investigating": "Investigating", "identified": "In Progress", "monitoring": "In Progress"}


@dataclass(frozen=True)
class RunOrigin:
    """Where a run came from, as far as an incident cares."""

    actor: str
    alert_name: str | None = None
    severity_label: str | None = None
    detected: float | None = None  # an alert's startsAt, when it has one


def incident_target(spec: Runbook, params: dict[str, Any]) -> str:
    """What an incident is about: the values of the params an alert may set (the same whether a run came
    from an alert or a terminal), or '-'."""
    return target_key({name: params.get(name) for name in spec.alert_params if params.get(name) is not None})


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _run_detail(report: RunReport, origin: RunOrigin) -> dict[str, Any]:
    return {
        "runbook": report.runbook,
        "status": report.status.value,
        "final_status": report.final_status.value if report.final_status else None,
        "mode": report.mode,
        "failing": [f"{c.id}: {c.summary}"[:300] for c in report.checks if c.status is not Status.OK][:20],
        "alert": origin.alert_name,
    }


def _blank(
    *,
    title: str,
    runbook: str | None,
    target: str,
    service: str,
    severity: str,
    impact: str,
    source: str,
    detected: float,
    now: float,
) -> Incident:
    """A new incident, declared now."""
    return Incident(
        id=0,
        title=title,
        runbook=runbook,
        target=target,
        service=service,
        severity=severity,
        impact=impact,
        status="investigating",
        commander=None,
        source=source,
        detected=detected,
        declared=now,
        acknowledged=None,
        identified=None,
        mitigated=None,
        resolved=None,
        response_missed=None,
        resolution_missed=None,
        episode=now,
        life=0,
        updated=now,
    )


@dataclass
class _Change:
    """What one update does to one incident: its new values, its events, and the messages they send."""

    incident: Incident
    values: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, dict[str, Any], str | None, float | None]] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status_why: str = ""

    def __post_init__(self) -> None:
        self.started_as = self.incident.status

    def settle(self, opened: bool) -> None:
        """One status message for what an update did to the status (not one per step it went through):
        the status page's next line. A resolution says so itself."""
        before = "investigating" if opened else self.started_as
        now = self.incident.status
        if now != before and now != "resolved" and not any(kind == "resolved" for kind, _ in self.notices):
            self.notify("status", {"why": self.status_why})

    def set(self, **values: Any) -> None:
        self.values.update(values)
        self.incident = Incident(**{**self.incident.to_json(), **values})

    def event(
        self, kind: str, actor: str, detail: dict[str, Any], run_id: str | None = None, at: float | None = None
    ) -> None:
        self.events.append((kind, actor, detail, run_id, at))

    def notify(self, kind: str, detail: dict[str, Any]) -> None:
        self.notices.append((kind, detail))

    def status(self, status: str, actor: str, why: str) -> None:
        if status != self.incident.status:
            self.event("status", actor, {"from": self.incident.status, "to": status, "why": why})
            self.set(status=status)
            self.status_why = why


@dataclass
class _Decided:
    """A change decided inside its transaction, and whether it opens the incident."""

    change: _Change
    opened: bool = False


class Incidents:
    def __init__(
        self,
        state: StateStore,
        audit: AuditLog,
        policy: IncidentPolicy,
        redactor: Redactor,
        runbooks: RunbookSet | None = None,
    ) -> None:
        self.state = state
        self.store = IncidentStore(state)
        self.outbox = Outbox(state)
        self.audit = audit
        self.policy = policy
        self.redactor = redactor
        self.runbooks = runbooks
        self.book = MessageBook(policy.templates.status_page, policy.templates.internal)
        self._templates = Templates()

    # --- reading ---------------------------------------------------------------------------------------

    def get(self, incident_id: int) -> Incident:
        incident = self.store.get(incident_id)
        if incident is None:
            raise NotFound(f"no incident INC-{incident_id}")
        return incident

    def view(self, incident: Incident) -> dict[str, Any]:
        """What templates see: the guide's fields, with the actions taken and the next steps."""
        events = self.store.events(incident.id, ("applied", "failed", "pending", "decided"))
        actions = [
            f"{e.detail.get('remediation')}: {e.detail.get('outcome') or e.kind} - "
            + "; ".join(e.detail.get("changes", [])[:3])
            for e in events
            if e.kind in ("applied", "failed")
        ]
        decided = {(e.run_id, e.detail.get("remediation")) for e in events if e.kind == "decided"}
        next_steps = [
            f"approve {e.detail.get('remediation')}: runbook approve {e.run_id} --plan {e.detail.get('fingerprint')}"
            for e in events
            if e.kind == "pending" and (e.run_id, e.detail.get("remediation")) not in decided
        ]
        # Bounded: every notification of the incident carries them, and a chat message has a limit (an
        # incident whose fix was tried fifty times would fail every later page, escalations too).
        if len(actions) > SHOWN:
            actions = [f"({len(actions) - SHOWN} earlier: runbook incident show {incident.id})", *actions[-SHOWN:]]
        if len(next_steps) > SHOWN:
            more = len(next_steps) - SHOWN
            next_steps = [*next_steps[:SHOWN], f"({more} more approvals waiting: runbook runs, or the console)"]
        if incident.is_open:
            next_steps += self._advice(incident)
        return {
            "id": incident.id,
            "title": incident.title,
            "severity": Trusted(incident.severity),
            "status": Trusted(incident.status),
            "status_word": Trusted(_STATUS_WORD.get(incident.status, "Resolved")),
            "service": incident.service,
            "impact": incident.impact,
            "start_time": Trusted(_when(incident.detected)),
            "commander": incident.commander or Trusted("unassigned"),
            "runbook": incident.runbook or Trusted("-"),
            "actions": actions,
            "next_steps": next_steps,
        }

    def _advice(self, incident: Incident) -> list[str]:
        if self.runbooks is None or incident.runbook not in self.runbooks.runbooks:
            return []
        return list(self.runbooks.runbooks[incident.runbook].spec.advice)

    # --- what runs, decisions and alerts tell -----------------------------------------------------------
    #
    # Every change is decided inside the write transaction it is written in: what it is decided from is read
    # there, so two processes (the CLI and the daemon) or two threads never both open an incident, page a
    # level twice, or undo what the other just did.

    def after_run(self, report: RunReport, origin: RunOrigin) -> Incident | None:
        """Open, update or resolve the incident a run is about. A run that finds nothing wrong only
        resolves one that was open."""
        spec = (
            self.runbooks.runbooks[report.runbook].spec
            if self.runbooks and report.runbook in self.runbooks.runbooks
            else None
        )
        target = incident_target(spec, report.params) if spec else "-"
        failing = report.exit_status is not Status.OK
        found_wrong = report.status is not Status.OK or failing

        def decide() -> _Decided | None:
            now = time.time()
            incident = self.store.open_for(report.runbook, target)
            if incident is None and not found_wrong:
                return None
            opened = False
            if incident is None:
                previous = self.store.resolved_since(report.runbook, target, now - self.policy.incidents.reopen_window)
                if previous is not None:
                    change = _Change(previous)
                    self._reopen(change, origin.actor, f"run {report.run_id} found {report.runbook} failing again", now)
                else:
                    change, opened = _Change(self._new(report, spec, target, origin, now)), True
            else:
                change = _Change(incident)
            change.event("run", origin.actor, _run_detail(report, origin), run_id=report.run_id)
            self._raise_severity(change, origin)
            self._from_report(change, report, origin.actor)
            if not failing:
                why = f"run {report.run_id}: every check OK" + (" after the fix" if report.final_status else "")
                self._resolve(change, origin.actor, why)
            return _Decided(change, opened)

        return self._write(decide, origin.actor)

    def _new(self, report: RunReport, spec: Runbook | None, target: str, origin: RunOrigin, now: float) -> Incident:
        started = datetime.fromisoformat(report.started_at).timestamp()
        service = ", ".join(part.split("=", 1)[-1] for part in target.split(",")) if target != "-" else report.runbook
        impact = "; ".join(spec.symptoms[:3]) if spec and spec.symptoms else report.title
        return _blank(
            title=report.title,
            runbook=report.runbook,
            target=target,
            service=service,
            severity=report.severity,
            impact=impact,
            source="run",
            detected=min(origin.detected or started, started),
            now=now,
        )

    def _reopen(self, change: _Change, actor: str, why: str, now: float) -> None:
        """A new life for a resolved incident: its escalation path and targets start again from now."""
        change.set(
            status="investigating",
            resolved=None,
            mitigated=None,
            acknowledged=None,
            response_missed=None,
            resolution_missed=None,
            episode=now,
            life=change.incident.life + 1,
        )
        change.event("reopened", actor, {"why": why})
        change.notify("reopened", {"why": why})

    def _raise_severity(self, change: _Change, origin: RunOrigin) -> None:
        label = (origin.severity_label or "").strip()
        wanted = label if label in _SEVERITY_ORDER else self.policy.incidents.alert_severity.get(label.lower())
        if wanted and _SEVERITY_ORDER[wanted] < _SEVERITY_ORDER[change.incident.severity]:
            detail = {
                "from": change.incident.severity,
                "to": wanted,
                "why": f"alert severity {label!r}",
                "by": origin.actor,
            }
            change.event("severity", origin.actor, detail)
            change.notify("severity", detail)
            change.set(severity=wanted)

    def _from_report(self, change: _Change, report: RunReport, actor: str) -> None:
        started = datetime.fromisoformat(report.started_at).timestamp()
        causes = [c for c in report.checks if c.status is not Status.OK and c.code and c.code != "dependency_failed"]
        planned = [r for r in report.remediations if r.plan and r.plan.get("changes")]
        if (causes or planned) and change.incident.identified is None:
            first = min((started + c.duration_ms / 1000 for c in causes), default=time.time())
            change.set(identified=first)
        if (causes or planned) and change.incident.status == "investigating":
            cause = causes[0] if causes else None
            change.status("identified", actor, f"{cause.id}: {cause.code}" if cause else f"plan for {planned[0].id}")
        for decision in report.remediations:
            self._from_decision(change, decision, report.run_id, actor)

    def _from_decision(self, change: _Change, decision: RemediationDecision, run_id: str, actor: str) -> None:
        changes = [str(c.get("summary", ""))[:300] for c in (decision.plan or {}).get("changes", [])][:20]
        detail: dict[str, Any] = {"remediation": decision.id, "do": decision.do, "changes": changes}
        # On a resolved incident (a person approved after it resolved), the timeline hears of it; its status
        # stays: a new problem is a new run's to find.
        moves = change.incident.is_open
        if decision.decision == "pending" and decision.plan:
            detail.update(fingerprint=decision.plan["fingerprint"], run_id=run_id)
            change.event("pending", actor, detail, run_id=run_id)
            change.notify("pending", detail)
        elif decision.applied:
            detail.update(outcome=decision.outcome, verify=decision.verify, escalation=decision.escalation)
            if decision.outcome in ("applied", "resolved"):
                change.event("applied", actor, detail, run_id=run_id)
                change.notify("applied", detail)
                if moves:
                    change.status("monitoring", actor, f"{decision.id} applied, verifying")
                    if decision.outcome == "resolved" and change.incident.mitigated is None:
                        change.set(mitigated=time.time())
            else:
                detail["reason"] = decision.escalation or decision.outcome
                change.event("failed", actor, detail, run_id=run_id)
                change.notify("failed", detail)
                if moves:
                    change.status("identified", actor, f"{decision.id}: {decision.outcome}")
        elif decision.decision in ("denied", "rejected", "plan_failed") and decision.would_apply:
            detail.update(reason=decision.decision_reason, outcome=decision.decision)
            change.event("decided" if decision.decision == "rejected" else "failed", actor, detail, run_id=run_id)
            if decision.escalation:
                detail["reason"] = decision.escalation
                change.notify("failed", detail)
        if decision.decision in ("applied", "rejected"):
            change.event("decided", actor, {"remediation": decision.id, "decision": decision.decision}, run_id=run_id)

    def after_decision(self, run_id: str, decision: RemediationDecision, actor: str) -> Incident | None:
        """A person decided a pending remediation (CLI or API): the incident hears how it went."""

        def decide() -> _Decided | None:
            incident = self.store.of_run(run_id)
            if incident is None:
                return None
            change = _Change(incident)
            self._from_decision(change, decision, run_id, actor)
            if decision.outcome == "resolved":
                self._resolve(change, actor, f"{decision.id} applied and verified")
            return _Decided(change)

        return self._write(decide, actor)

    def alert_resolved(self, runbook: str, target: str, actor: str) -> Incident | None:
        def decide() -> _Decided | None:
            incident = self.store.open_for(runbook, target)
            if incident is None:
                return None
            change = _Change(incident)
            self._resolve(change, actor, "the alert resolved")
            return _Decided(change)

        return self._write(decide, actor)

    def alerts_joined(self, runbook: str, target: str, names: dict[str, int]) -> None:
        """Alerts that joined an incident already handled: noted on its timeline at most once a minute
        (Alertmanager re-sends a firing group every group_interval), with how many came."""

        def decide() -> _Decided | None:
            incident = self.store.open_for(runbook, target)
            if incident is None or self.store.last_event_at(incident.id, "alerts") > time.time() - 60:
                return None
            change = _Change(incident)
            change.event(
                "alerts", "alertmanager", {"alerts": dict(list(names.items())[:20]), "count": sum(names.values())}
            )
            return _Decided(change)

        self._write(decide, "alertmanager")

    # --- what people do -----------------------------------------------------------------------------------

    def open_by_person(
        self, *, title: str, severity: str, impact: str, actor: str, service: str | None = None
    ) -> Incident:
        """What no check sees (the guide's "User reports", "Support tickets")."""
        now = time.time()
        incident = _blank(
            title=title,
            runbook=None,
            target=f"person:{now:.6f}",
            service=service or title,
            severity=severity,
            impact=impact or title,
            source="person",
            detected=now,
            now=now,
        )
        return self._person(lambda: _Decided(_Change(incident), opened=True), actor)

    def acknowledge(self, incident_id: int, actor: str) -> Incident:
        def decide() -> _Decided:
            change = _Change(self._open(incident_id))
            if change.incident.acknowledged is None:
                change.set(acknowledged=time.time())
                change.event("acknowledged", actor, {"by": actor})
                change.notify("acknowledged", {"by": actor})
                if change.incident.commander is None:
                    change.set(commander=actor)
            return _Decided(change)

        return self._person(decide, actor)

    def assign(self, incident_id: int, commander: str, actor: str) -> Incident:
        def decide() -> _Decided:
            change = _Change(self._open(incident_id))
            change.set(commander=commander)
            change.event("assigned", actor, {"commander": commander})
            change.notify("assigned", {"commander": commander})
            return _Decided(change)

        return self._person(decide, actor)

    def note(self, incident_id: int, text: str, actor: str) -> Incident:
        def decide() -> _Decided:
            change = _Change(self.get(incident_id))
            change.event("note", actor, {"text": text[:4000]})
            return _Decided(change)

        return self._person(decide, actor)

    def set_severity(self, incident_id: int, severity: str, actor: str, why: str = "") -> Incident:
        def decide() -> _Decided:
            change = _Change(self._open(incident_id))
            if severity != change.incident.severity:
                detail = {
                    "from": change.incident.severity,
                    "to": severity,
                    "why": why or "set by a person",
                    "by": actor,
                }
                change.event("severity", actor, detail)
                change.notify("severity", detail)
                change.set(severity=severity)
            return _Decided(change)

        return self._person(decide, actor)

    def resolve(self, incident_id: int, actor: str, why: str = "") -> Incident:
        def decide() -> _Decided:
            change = _Change(self._open(incident_id))
            self._resolve(change, actor, why or f"resolved by {actor}")
            return _Decided(change)

        return self._person(decide, actor)

    def _person(self, decide: Callable[[], _Decided], actor: str) -> Incident:
        written = self._write(decide, actor)
        assert written is not None
        return written

    def _open(self, incident_id: int) -> Incident:
        incident = self.get(incident_id)
        if not incident.is_open:
            raise Conflict(f"INC-{incident_id} is resolved")
        return incident

    def _resolve(self, change: _Change, actor: str, why: str) -> None:
        if change.incident.is_open:
            change.event("status", actor, {"from": change.incident.status, "to": "resolved", "why": why})
            change.set(status="resolved", resolved=time.time())
            change.notify("resolved", {"why": why})

    # --- the clock: escalation and targets --------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Reach the escalation levels that are due and record missed targets, for every open incident
        (oldest first). One incident's trouble (a condition that cannot be evaluated) holds up no other."""
        for listed in self.store.find(status="open", limit=10_000, oldest_first=True):

            def decide(incident_id: int = listed.id) -> _Decided | None:
                incident = self.store.get(incident_id)
                if incident is None or not incident.is_open:
                    return None  # resolved meanwhile: nothing more to page about
                change = _Change(incident)
                at = now or time.time()
                self._targets(change, at)
                self._escalate(change, at)
                return _Decided(change) if change.events or change.notices else None

            try:
                self._write(decide, "escalation")
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self.audit.record("escalation_failed", incident=listed.id, error=f"{type(exc).__name__}: {exc}")

    def _targets(self, change: _Change, now: float) -> None:
        incident = change.incident
        target = self.policy.incidents.target(incident.severity)
        for name, limit, done, missed in (
            ("response", target.response, incident.acknowledged, incident.response_missed),
            ("resolution", target.resolution, incident.resolved, incident.resolution_missed),
        ):
            if limit is not None and done is None and missed is None and now > incident.episode + limit:
                change.set(**{f"{name}_missed": now})
                detail = {"target": name, "limit": f"{limit:g}s"}
                change.event("target_missed", "escalation", detail)
                change.notify("target_missed", detail)

    def _escalate(self, change: _Change, now: float) -> None:
        incident = change.incident
        reached = {(level, round_) for level, round_, _ in self.store.escalations(incident.id, incident.life)}
        facts = {
            "severity": incident.severity,
            "status": incident.status,
            "acknowledged": incident.acknowledged is not None,
            "response_missed": incident.response_missed is not None,
            "resolution_missed": incident.resolution_missed is not None,
            "age": now - incident.episode,
            "runbook": incident.runbook or "",
        }
        for number, level in enumerate(self.policy.escalation, start=1):
            if level.until == "acknowledged" and incident.acknowledged is not None:
                continue
            waited = now - incident.episode - level.after
            if waited < 0 or not self._holds(change, number, level.when, facts):
                continue
            round_ = int(waited // level.repeat) if level.repeat else 0
            if (number, round_) in reached:
                continue
            why = "paged at once" if level.after == 0 else f"not {level.until} after {level.after:g}s"
            if round_:
                why += f" (again: not {level.until}, round {round_ + 1})"
            detail = {"level": number, "round": round_, "level_name": level.name, "why": why, "notify": level.notify}
            change.event("escalated", "escalation", detail)
            change.notify("escalated", detail)

    def _holds(self, change: _Change, number: int, when: str | None, facts: dict[str, Any]) -> bool:
        """A level's condition; one that cannot be evaluated does not hold, and says so once."""
        if not when:
            return True
        try:
            return bool(self._templates.evaluate(when, facts))
        except TemplateError as exc:
            if not self.store.has_event(change.incident.id, "policy_error", f"level {number}"):
                change.event("policy_error", "escalation", {"what": f"level {number}", "error": str(exc)})
            return False

    # --- writing: one transaction, audited -------------------------------------------------------------------

    def _write(self, decide: Callable[[], _Decided | None], actor: str) -> Incident | None:
        """Decide and write in one write transaction, with the audit record: if that record cannot be
        written, nothing is."""
        with self.state.write() as db:
            decided = decide()
            if decided is None:
                return None
            return self._commit(db, decided, actor)

    def _commit(self, db: Db, decided: _Decided, actor: str) -> Incident | None:
        change, opened = decided.change, decided.opened
        if not opened and not change.values and not change.events and not change.notices:
            return change.incident
        if opened:
            values = {k: v for k, v in change.incident.to_json().items() if k not in ("id", "updated")}
            incident_id = self.store.insert(db, values)
            change.incident = Incident(**{**change.incident.to_json(), "id": incident_id})
            change.events.insert(0, ("opened", actor, {"by": actor}, None, change.incident.declared))
            change.notices.insert(0, ("opened", {"by": actor}))
        elif change.values:
            self.store.update(db, change.incident.id, change.values)
        if opened or "life" in change.values:
            # A new incident's (or a reopened one's) first levels are due at once: paged in the same write.
            self._escalate(change, time.time())
        incident = change.incident
        self.audit.record(
            "incident_opened" if opened else "incident_updated",
            actor=actor,
            incident=incident.id,
            runbook=incident.runbook,
            target=incident.target,
            severity=incident.severity,
            status=incident.status,
            changed=sorted(change.values),
            events=[e[0] for e in change.events],
        )
        event_ids = [
            self.store.add_event(db, incident.id, kind, who, self.redactor.data(detail), run_id=run_id, at=at)
            for kind, who, detail, run_id, at in change.events
        ]
        change.settle(opened)
        self._queue(db, change, event_ids[-1] if event_ids else 0)
        return self.store.get(incident.id)

    def _queue(self, db: Db, change: _Change, last_event: int) -> None:
        incident = change.incident
        audience = set(self.policy.notify)
        for kind, detail in change.notices:
            if kind == "escalated":
                self.store.add_escalation(db, incident.id, incident.life, detail["level"], detail["round"])
        for level, _, _ in self.store.escalations(incident.id, incident.life):
            audience.update(self.policy.escalation[level - 1].notify if level <= len(self.policy.escalation) else [])
        if not audience:
            return
        view = self.view(incident)
        for number, (kind, detail) in enumerate(change.notices):
            shown = (
                {**view, "status": Trusted("investigating"), "status_word": Trusted("Investigating")}
                if kind == "opened"
                else view
            )
            key = f"{incident.id}:{last_event}:{number}:{kind}"
            if kind == "escalated":
                key = f"{incident.id}:escalated:{incident.life}:{detail['level']}:{detail['round']}"
                targets = set(detail["notify"]) | set(self.policy.notify)
            else:
                targets = audience
            for channel in sorted(targets):
                rendered = self.book.notification(kind, shown, self.redactor.data(detail), self._flavor(channel))
                self.outbox.enqueue(
                    db,
                    incident_id=incident.id,
                    event_key=key,
                    channel=channel,
                    event=kind,
                    subject=self.redactor.text(rendered.subject),
                    body=self.redactor.text(rendered.body),
                )

    def _flavor(self, channel: str) -> Flavor:
        config = self.policy.channels.get(channel)
        if isinstance(config, SlackChannel):
            return "chat"
        if isinstance(config, EmailChannel):
            return "email"
        return "terminal"

    def update_text(self, incident_id: int, which: str) -> str:
        """The guide's status-page or internal update for an incident, for a terminal."""
        return self.book.render(which, self.view(self.get(incident_id)), "terminal")

    def targets(self, incident: Incident, now: float) -> dict[str, dict[str, Any]]:
        """Time to each of the guide's targets for the incident's severity: met, missed, or time left."""
        target = self.policy.incidents.target(incident.severity)
        targets: dict[str, dict[str, Any]] = {}
        for name, limit, done in (
            ("response", target.response, incident.acknowledged),
            ("resolution", target.resolution, incident.resolved),
        ):
            if limit is None:
                targets[name] = {"limit_s": None, "state": "best effort"}
                continue
            due = incident.episode + limit
            if done is not None:
                state = "met" if done <= due else "missed"
                targets[name] = {"limit_s": limit, "state": state, "took_s": round(done - incident.episode, 1)}
            else:
                state = "missed" if now > due else "running"
                targets[name] = {"limit_s": limit, "state": state, "left_s": round(due - now, 1)}
        return targets

    def describe(self, incident_id: int, now: float | None = None) -> dict[str, Any]:
        """Everything about an incident, for `incident show` and the API: the record, time to each target,
        who was paged when, the notifications and how their delivery went, and the timeline."""
        incident = self.get(incident_id)
        now = now or time.time()
        targets = self.targets(incident, now)
        levels = self.policy.escalation
        paged = [
            {
                "level": level,
                "round": round_,
                "name": levels[level - 1].name if level <= len(levels) else f"level {level}",
                "at": at,
                "channels": levels[level - 1].notify if level <= len(levels) else [],
            }
            for level, round_, at in self.store.escalations(incident.id, None)
        ]
        notifications = [
            {
                "event": m.event,
                "channel": m.channel,
                "status": m.status,
                "attempts": m.attempts,
                "error": m.last_error,
                "created": m.created,
                "sent": m.sent,
            }
            for m in self.outbox.of_incident(incident.id)
        ]
        events = [e.to_json() for e in self.store.events(incident.id)]
        return {
            "incident": incident.to_json(),
            "reference": f"INC-{incident.id}",
            "targets": targets,
            "escalations": paged,
            "notifications": notifications,
            "events": events,
            "runs": sorted({e["run_id"] for e in events if e["run_id"]}),
        }
