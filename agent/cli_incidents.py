"""`runbook incident ...` and `runbook postmortem`: the people's half of the guide at a terminal, and the
hooks by which a run or a decision from the CLI tells its incident. Heavy imports stay inside commands."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from agent import completion
from agent.cli_errors import errors_as_one_line
from agent.exceptions import RunbookError

__all__ = ["deliver", "incident", "incident_after_decision", "incident_after_run", "postmortem"]

SEVERITIES = click.Choice(["SEV-1", "SEV-2", "SEV-3", "SEV-4"])
NOTIFY_WITHIN = 5.0  # seconds the CLI spends delivering before it exits (the rest stays in the outbox)


def _incidents(state: Any, runbooks: Any = None) -> Any:
    from agent.audit import AuditLog
    from agent.incidents import Incidents
    from agent.state import StateStore

    policy = state.incident_policy
    if runbooks is None:
        try:
            runbooks = state.load()
        except RunbookError:
            runbooks = None  # the incident record stands without them (advice is left out)
    audit = AuditLog(state.settings.audit_path, state.redactor, actor=state.actor, mode="incident")
    return Incidents(StateStore(state.settings.state_location), audit, policy, state.redactor, runbooks)


def _deliver(state: Any, incidents: Any) -> None:
    """Send what is due, for a few seconds at most; what is left waits in the outbox for the daemon."""
    if not incidents.policy.channels or not incidents.outbox.waiting():
        return
    from agent.notify.outbox import Courier

    courier = Courier(incidents.outbox, dict(incidents.policy.channels), incidents.audit, state.redactor)
    results = courier.flush(NOTIFY_WITHIN)
    sent = sum(s for s, _ in results.values())
    failed = [channel for channel, (_, f) in results.items() if f]
    left = incidents.outbox.waiting()
    if sent or failed or left:
        note = f"notifications: {sent} sent"
        if left:
            note += f", {left} waiting in the outbox" + (f" ({', '.join(failed)} failing)" if failed else "")
        state.echo(note, err=True)


def _trouble(state: Any, exc: Exception, **about: Any) -> str:
    """An incident step that failed: audited when it can be, and said in one line. A run's report and exit
    status, or a decision already recorded, stand either way."""
    from agent.audit import AuditLog

    text: str = state.redactor.text(str(exc) if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):  # the audit log's own trouble is reported by the run itself
        AuditLog(state.settings.audit_path, state.redactor, actor=state.actor, mode="incident").record(
            "incident_update_failed", error=text, **about
        )
    return text


def incident_after_run(state: Any, runbooks: Any, report: Any) -> tuple[Any, Any, str | None]:
    """The incident a CLI run opened or updated (or None), the service to deliver its messages with, and what
    went wrong if the incident could not be updated (the run's report is printed either way)."""
    from agent.incidents import RunOrigin

    try:
        incidents = _incidents(state, runbooks)
        return incidents.after_run(report, RunOrigin(state.actor)), incidents, None
    except Exception as exc:
        return None, None, _trouble(state, exc, run_id=report.run_id, runbook=report.runbook)


def deliver(state: Any, incidents: Any) -> None:
    """Deliver after a run or a decision: trouble here is a warning, never the command's outcome."""
    if incidents is None:
        return
    try:
        _deliver(state, incidents)
    except Exception as exc:
        state.echo(f"runbook: warning: notifications not delivered: {_trouble(state, exc)}", err=True)


def incident_after_decision(state: Any, runbooks: Any, run_id: str, decision: Any, *, echo: bool = True) -> Any:
    """The incident a decision updated (or None); told on stdout unless the caller prints JSON."""
    try:
        incidents = _incidents(state, runbooks)
        record = incidents.after_decision(run_id, decision, state.actor)
    except Exception as exc:
        trouble = _trouble(state, exc, run_id=run_id)
        state.echo(f"runbook: warning: the incident was not updated: {trouble}", err=True)
        return None
    if record is not None:
        if echo:
            state.echo(f"Incident INC-{record.id}: {record.status}")
        deliver(state, incidents)
    return record


def _id(value: str) -> int:
    digits = value.upper().removeprefix("INC-")
    if not digits.isdigit():
        raise click.BadParameter(f"expected an incident id like 12 or INC-12, got {value!r}")
    return int(digits)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    return (
        f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"
    )


def _print_incident(state: Any, info: dict[str, Any]) -> None:
    inc = info["incident"]
    state.echo(f"{info['reference']} [{inc['severity']}] {inc['title']} - {inc['status']}")
    state.echo(
        f"  service: {inc['service']}  runbook: {inc['runbook'] or '-'}  commander: {inc['commander'] or 'unassigned'}"
    )
    state.echo(f"  impact: {inc['impact']}")
    for name in ("detected", "declared", "acknowledged", "identified", "mitigated", "resolved"):
        state.echo(f"  {name:13} {_when(inc[name])}")
    for name, target in info["targets"].items():
        if target["limit_s"] is None:
            state.echo(f"  {name} target: best effort")
        elif "took_s" in target:
            state.echo(
                f"  {name} target {_span(target['limit_s'])}: {target['state']} (took {_span(target['took_s'])})"
            )
        else:
            left = target["left_s"]
            state.echo(
                f"  {name} target {_span(target['limit_s'])}: "
                + (f"missed {_span(-left)} ago" if target["state"] == "missed" else f"{_span(left)} left")
            )
    for page in info["escalations"]:
        again = f" (again, round {page['round'] + 1})" if page["round"] else ""
        state.echo(f"  paged {page['name']}{again} at {_when(page['at'])} via {', '.join(page['channels'])}")
    for note in info["notifications"]:
        how = f"sent {_when(note['sent'])}" if note["sent"] else f"{note['status']} after {note['attempts']} attempts"
        error = f" ({note['error']})" if note["error"] and not note["sent"] else ""
        state.echo(f"  notified {note['channel']}: {note['event']} - {how}{error}")
    state.echo("  timeline:")
    for event in info["events"]:
        state.echo(f"    {_when(event['at'])} {event['kind']:14} {event['actor']}: {_what(event)}"[:300])


def _what(event: dict[str, Any]) -> str:
    detail = event["detail"]
    if event["kind"] == "run":
        final = f" -> {detail['final_status']}" if detail.get("final_status") else ""
        return f"run {event['run_id']} ({detail.get('mode')}): {detail.get('status')}{final}"
    if event["kind"] in ("applied", "failed", "pending"):
        return f"{detail.get('remediation')} {detail.get('outcome') or ''} {detail.get('reason') or ''}".strip()
    if event["kind"] == "alerts":
        return f"{detail.get('count')} alerts joined"
    return str(detail.get("text") or detail.get("why") or detail.get("remediation") or detail.get("by") or "")


@click.group()
def incident() -> None:
    """Incidents: open, list, show, acknowledge, assign, note, severity, resolve, update."""


def _output(state: Any, as_json: bool, info: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(state.redactor.data(info), indent=2, default=str))
    else:
        _print_incident(state, info)


_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@incident.command("open")
@click.option("--severity", type=SEVERITIES, required=True)
@click.option("--title", required=True, help="What is wrong, in a few words.")
@click.option("--impact", default="", help="Who sees what (the status page's [impact]).")
@click.option("--service", help="The service (the status page's [service]); default: the title.")
@_json
@click.pass_obj
@errors_as_one_line
def open_(state: Any, severity: str, title: str, impact: str, service: str | None, as_json: bool) -> None:
    """Open an incident for what no check sees (user reports, support tickets)."""
    incidents = _incidents(state)
    record = incidents.open_by_person(title=title, severity=severity, impact=impact, actor=state.actor, service=service)
    _output(state, as_json, incidents.describe(record.id))
    _deliver(state, incidents)


@incident.command("list")
@click.option(
    "--status",
    type=click.Choice(["open", "investigating", "identified", "monitoring", "resolved", "all"]),
    default="open",
    show_default=True,
)
@click.option("--limit", default=50, show_default=True)
@_json
@click.pass_obj
@errors_as_one_line
def list_(state: Any, status: str, limit: int, as_json: bool) -> None:
    """Incidents, newest first."""
    rows = _incidents(state).store.find(status=None if status == "all" else status, limit=limit)
    if as_json:
        click.echo(json.dumps(state.redactor.data([r.to_json() for r in rows]), indent=2))
        return
    for r in rows:
        state.echo(f"INC-{r.id:<5} {r.severity} {r.status:13} {_when(r.declared)}  {r.title} ({r.service})")


@incident.command("show")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@_json
@click.pass_obj
@errors_as_one_line
def show(state: Any, incident_id: str, as_json: bool) -> None:
    """An incident: times, targets, who was paged when, notifications, timeline."""
    _output(state, as_json, _incidents(state).describe(_id(incident_id)))


def _act(state: Any, as_json: bool, action: str, incident_id: str, *args: Any) -> None:
    incidents = _incidents(state)
    record = getattr(incidents, action)(_id(incident_id), *args)
    _output(state, as_json, incidents.describe(record.id))
    _deliver(state, incidents)


@incident.command("ack")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@_json
@click.pass_obj
@errors_as_one_line
def ack(state: Any, incident_id: str, as_json: bool) -> None:
    """Acknowledge: stops the acknowledgement ladder of the escalation path."""
    _act(state, as_json, "acknowledge", incident_id, state.actor)


@incident.command("assign")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.argument("commander")
@_json
@click.pass_obj
@errors_as_one_line
def assign(state: Any, incident_id: str, commander: str, as_json: bool) -> None:
    """Assign the incident commander."""
    _act(state, as_json, "assign", incident_id, commander, state.actor)


@incident.command("note")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.argument("text")
@_json
@click.pass_obj
@errors_as_one_line
def note(state: Any, incident_id: str, text: str, as_json: bool) -> None:
    """Add a note to the timeline."""
    _act(state, as_json, "note", incident_id, text, state.actor)


@incident.command("severity")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.argument("severity", type=SEVERITIES)
@click.option("--reason", default="", help="Why (recorded and told).")
@_json
@click.pass_obj
@errors_as_one_line
def severity(state: Any, incident_id: str, severity: str, reason: str, as_json: bool) -> None:
    """Change the severity (its targets and escalation follow)."""
    _act(state, as_json, "set_severity", incident_id, severity, state.actor, reason)


@incident.command("resolve")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.option("--reason", default="", help="How it was resolved.")
@_json
@click.pass_obj
@errors_as_one_line
def resolve(state: Any, incident_id: str, reason: str, as_json: bool) -> None:
    """Resolve the incident (stops every escalation)."""
    _act(state, as_json, "resolve", incident_id, state.actor, reason)


@incident.command("update")
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.option("--status-page", "which", flag_value="status_page", help="The status page update.")
@click.option("--internal", "which", flag_value="internal", help="The internal update (the default).")
@_json
@click.pass_obj
@errors_as_one_line
def update(state: Any, incident_id: str, which: str | None, as_json: bool) -> None:
    """Print the guide's status-page or internal update, filled in."""
    incidents = _incidents(state)
    text = incidents.update_text(_id(incident_id), which or "internal")
    if as_json:
        click.echo(json.dumps({"incident": _id(incident_id), "template": which or "internal", "text": text}))
    else:
        for line in text.splitlines():
            state.echo(line)


@click.command()
@click.argument("incident_id", shell_complete=completion.incident_ids)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Markdown file (default: INC-N-postmortem.md).")
@click.pass_obj
@errors_as_one_line
def postmortem(state: Any, incident_id: str, output: Path | None) -> None:
    """Draft the guide's post-mortem (Markdown and an SVG timeline beside it) from the incident and the
    audit log, whose chain is verified first."""
    from agent.incidents.postmortem import draft_postmortem

    number = _id(incident_id)
    path = output or Path(f"INC-{number}-postmortem.md")
    svg = path.with_name(path.stem + "-timeline.svg")
    draft = draft_postmortem(_incidents(state), number, state.settings.audit_path, svg.name)
    path.write_text(state.redactor.text(draft.markdown))
    svg.write_text(state.redactor.text(draft.svg))
    click.echo(f"{path}\n{svg}")
    if "does NOT verify" in draft.markdown:
        click.echo("runbook: warning: the audit log does not verify (said at the top of the draft)", err=True)
        sys.exit(1)
