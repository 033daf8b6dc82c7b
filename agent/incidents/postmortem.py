"""The guide's post-mortem template, drafted from the incident record and the audit log: Markdown, and
beside it an SVG timeline (check status lanes over time, actions and notifications as markers). The audit
chain is verified first and the document says what it found, a broken chain at the very top."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _escape

from agent.audit import read_records, verify
from agent.incidents.service import Incidents
from agent.incidents.store import Incident

__all__ = ["Draft", "draft_postmortem"]


@dataclass(frozen=True)
class Draft:
    markdown: str
    svg: str


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def xml(text: str) -> str:
    """Escaped for XML text and attributes, without the control characters XML 1.0 forbids (one would
    make the whole picture invalid)."""
    return _escape(_CONTROL.sub("\ufffd", text), {'"': "&quot;"})


def _hms(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC") if ts else "--:--:--"


def _ts(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} hours {rest // 60} minutes ({seconds:.0f} s)"


def draft_postmortem(incidents: Incidents, incident_id: int, audit_path: Path, svg_name: str) -> Draft:
    info = incidents.describe(incident_id)
    incident = incidents.get(incident_id)
    chain = verify(audit_path) if audit_path.exists() else None
    runs = set(info["runs"])
    records = [r for r in read_records(audit_path) if r.get("run_id") in runs] if audit_path.exists() else []
    sent = [n for n in info["notifications"] if n["sent"]]
    events = info["events"]
    md = _markdown(incidents, incident, info, chain, records, sent, events, svg_name)
    return Draft(md, _svg(incident, records, sent, events))


def _markdown(
    incidents: Incidents,
    incident: Incident,
    info: dict[str, Any],
    chain: Any,
    records: list[dict[str, Any]],
    sent: list[dict[str, Any]],
    events: list[dict[str, Any]],
    svg_name: str,
) -> str:
    ref = info["reference"]
    out: list[str] = [f"# Incident Post-Mortem: {ref} {_md(incident.title)}", ""]
    if chain is None:
        out += ["> **The audit log was not found**: this draft rests on the state store alone.", ""]
    elif not chain.ok:
        where = f" (line {chain.line})" if chain.line else ""
        out += [
            f"> **The audit log does NOT verify: {chain.problem}{where}.** What this draft takes from it may be"
            " incomplete or altered.",
            "",
        ]
    else:
        out += [f"> Audit log verified: {chain.records} records, hash chain intact.", ""]
    failing = [r for r in records if r.get("event") == "check_result" and r.get("status") not in ("OK", None)]
    first_cause = next((r for r in failing if r.get("code") and r.get("code") != "dependency_failed"), None)
    applied = [e for e in events if e["kind"] == "applied"]
    end = incident.resolved or datetime.now(UTC).timestamp()
    out += ["## Summary", ""]
    summary = (
        f"{incident.severity} incident on {_md(incident.service)} ({incident.runbook or 'declared by a person'}):"
        f" {_md(incident.title)}. Detected {_hms(incident.detected)}"
        + (
            f", resolved {_hms(incident.resolved)} after {end - incident.detected:.0f} s."
            if incident.resolved
            else ", not resolved yet."
        )
    )
    if first_cause:
        summary += f" Cause found by `{first_cause['id']}`: {_md(first_cause.get('summary'))}."
    if applied:
        summary += (
            " Fixed by "
            + ", ".join(f"{_md(e['detail']['remediation'])} ({_md(e['detail'].get('outcome'))})" for e in applied)
            + "."
        )
    out += [summary, ""]

    out += ["## Timeline", ""]
    timeline: list[tuple[float, str]] = [
        (incident.detected, "Issue detected" + _alert_of(events)),
        (incident.declared, f"Incident declared ({incident.severity})"),
    ]
    if incident.acknowledged:
        timeline.append((incident.acknowledged, f"Acknowledged ({_md(incident.commander or 'unassigned')})"))
    if incident.identified:
        cause = f": `{first_cause['id']}` {_md(first_cause.get('summary'))}" if first_cause else ""
        timeline.append((incident.identified, "Root cause identified" + cause))
    # When each fix was applied and verified: the audit log's times (the incident record's are when the
    # run that made them ended).
    for r in records:
        if r.get("event") == "apply_finished":
            how = "applied" if r.get("ok") else "failed to apply"
            timeline.append((_ts(r), f"Fix {how}: {_md(r.get('remediation'))}"))
        elif r.get("event") == "verify":
            how = "verified" if r.get("resolved") else "not verified"
            timeline.append((_ts(r), f"Fix {how}: {_md(r.get('remediation'))}"))
    for e in events:
        if e["kind"] == "applied" and not records:
            detail = e["detail"]
            timeline.append((e["at"], f"Fix applied: {_md(detail['remediation'])} ({_md(detail.get('outcome'))})"))
        elif e["kind"] == "failed":
            detail = e["detail"]
            timeline.append((e["at"], f"Fix did not take: {_md(detail['remediation'])} ({_md(detail.get('reason'))})"))
        elif e["kind"] == "escalated":
            timeline.append((e["at"], f"Escalated to {_md(e['detail']['level_name'])}"))
        elif e["kind"] == "severity":
            timeline.append((e["at"], f"Severity {e['detail']['from']} -> {e['detail']['to']}"))
        elif e["kind"] == "target_missed":
            timeline.append((e["at"], f"{e['detail']['target'].capitalize()} target missed"))
    if incident.mitigated and not any(r.get("event") == "verify" for r in records):
        timeline.append((incident.mitigated, "Fix verified"))
    if incident.resolved:
        timeline.append((incident.resolved, "Incident resolved"))
    # Every outside value in these lines was escaped where it was put in.
    out += [f"- {_hms(at)} - {text}" for at, text in sorted(timeline, key=lambda t: t[0])]
    out += ["", f"![Timeline of {ref}]({svg_name})", ""]

    out += [
        "## Impact",
        "",
        f"- Duration: {_duration(end - incident.detected)}",
        "- Users affected: Approximately [X] users",
    ]
    out += [f"- Requests failed: {_requests_failed(records)}", ""]

    out += ["## Root Cause", ""]
    if failing:
        seen: set[str] = set()
        for r in failing:
            if r["id"] in seen:
                continue
            seen.add(r["id"])
            code = f" [{r['code']}]" if r.get("code") else ""
            out.append(f"- `{r['id']}` ({r.get('check')}): {r.get('status')} - {_md(r.get('summary'))}{code}")
    else:
        out.append(f"[No check saw the cause. {_md(incident.impact)}]")
    out += ["", "[Detailed explanation of what caused the incident]", ""]

    out += ["## Resolution", ""]
    resolution = [e for e in events if e["kind"] in ("applied", "failed", "pending")]
    for e in resolution:
        d = e["detail"]
        out.append(
            f"- {_md(d['remediation'])} ({_md(d.get('do'))}): {e['kind']}"
            + (f" -> {_md(d.get('outcome'))}" if d.get("outcome") else "")
        )
        out += [f"  - {_md(change)}" for change in d.get("changes", [])]
        for check in d.get("verify") or []:
            out.append(f"  - verified: `{check.get('id')}` {check.get('status')} {_md(check.get('summary'))}")
    if not resolution:
        out.append("[How the incident was resolved]")
    out.append("")

    out += ["## Action Items", ""]
    items = [
        f"Escalation: {e['detail'].get('reason') or e['detail'].get('escalation')}"
        for e in events
        if e["kind"] == "failed"
    ]
    decided = {(e["run_id"], e["detail"].get("remediation")) for e in events if e["kind"] == "decided"}
    items += [
        f"Pending approval never decided: {e['detail']['remediation']} (plan {e['detail'].get('fingerprint')})"
        for e in events
        if e["kind"] == "pending" and (e["run_id"], e["detail"].get("remediation")) not in decided
    ]
    items += [f"Missed the {e['detail']['target']} target" for e in events if e["kind"] == "target_missed"]
    items += [f"Runbook advice: {a}" for a in incidents._advice(incident)]
    items += ["Update runbooks"]
    out += [f"{i}. [ ] {_md(item)} - Assigned to: [Name] - Due: [Date]" for i, item in enumerate(items, 1)]
    out += [
        "",
        "## Lessons Learned",
        "### What Went Well",
        "- [Item 1]",
        "",
        "### What Could Be Improved",
        "- [Item 1]",
        "",
    ]
    if sent:
        out += ["## Notifications sent", ""]
        out += [f"- {_hms(n['sent'])} {n['event']} to {_md(n['channel'])}" for n in sent]
        out.append("")
    return "\n".join(out)


def _alert_of(events: list[dict[str, Any]]) -> str:
    alert = next((e["detail"].get("alert") for e in events if e["kind"] == "run" and e["detail"].get("alert")), None)
    return f" (alert {_md(alert)})" if alert else ""


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|~>])")  # one character class: linear


def _md(value: object) -> str:
    """An outside value put into the Markdown: one line, no HTML, no link to follow, no Markdown of its own
    (a title cannot add a heading, a link or an image to the post-mortem)."""
    from agent.notify.escape import for_email

    text = for_email(str(value))[:300].replace("&", "&amp;").replace("<", "&lt;")
    return _MARKDOWN.sub(r"\\\1", text)


def _requests_failed(records: list[dict[str, Any]]) -> str:
    """From the error-rate checks of the incident's runs: the worst window they measured."""
    measured = [
        r.get("metrics") or {}
        for r in records
        if r.get("event") == "check_result"
        and r.get("check") == "docker.error_rate"
        and (r.get("metrics") or {}).get("requests")
    ]
    if not measured:
        return "not measured (no error-rate check in these runs)"
    worst = max(measured, key=lambda m: m.get("error_pct", 0))
    errors, requests = worst.get("errors", 0), worst.get("requests", 0)
    return f"{worst.get('error_pct', 0):.1f}% ({errors:.0f} of {requests:.0f} requests in the check's window)"


_COLOURS = {"OK": "#2e7d32", "WARNING": "#f9a825", "CRITICAL": "#c62828", "UNKNOWN": "#757575"}


def _svg(
    incident: Incident, records: list[dict[str, Any]], sent: list[dict[str, Any]], events: list[dict[str, Any]]
) -> str:
    checks = [r for r in records if r.get("event") == "check_result"]
    lanes = sorted({str(r.get("id")) for r in checks})
    start = min([incident.detected, *(_ts(r) for r in checks)]) - 1
    end = max([incident.resolved or 0, incident.declared, *(_ts(r) for r in records)]) + 1
    left, width, lane_h, top = 170, 700, 22, 60
    height = top + lane_h * max(1, len(lanes)) + 90

    def x(ts: float) -> float:
        return left + (ts - start) / max(end - start, 1e-6) * width

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" role="img"'
        f' aria-label="Timeline of INC-{incident.id}" font-family="sans-serif" font-size="12">',
        f"<title>Timeline of INC-{incident.id}: {xml(incident.title)}</title>",
        f'<text x="10" y="20" font-size="15" font-weight="bold">'
        f"INC-{incident.id} {xml(incident.title)} ({incident.severity})</text>",
        f'<text x="10" y="40" fill="#555">{_hms(start)} to {_hms(end)}; lanes: check status'
        " (green OK, yellow WARNING, red CRITICAL, grey UNKNOWN)</text>",
    ]
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        parts.append(f'<text x="10" y="{y + 15}">{xml(lane[:24])}</text>')
        seen = sorted((r for r in checks if str(r.get("id")) == lane), key=_ts)
        for j, r in enumerate(seen):
            x0 = x(_ts(r))
            x1 = x(_ts(seen[j + 1])) if j + 1 < len(seen) else x(end)
            colour = _COLOURS.get(str(r.get("status")), "#757575")
            label = f"{lane} {r.get('status')} at {_hms(_ts(r))}: {str(r.get('summary'))[:120]}"
            parts.append(
                f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2):.1f}" height="{lane_h - 6}" fill="{colour}">'
                f"<title>{xml(label)}</title></rect>"
            )
    base = top + lane_h * max(1, len(lanes)) + 10
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + width}" y2="{base}" stroke="#333"/>')
    milestones = [
        ("detected", incident.detected),
        ("declared", incident.declared),
        ("identified", incident.identified),
        ("mitigated", incident.mitigated),
        ("resolved", incident.resolved),
    ]
    for name, at in milestones:
        if at:
            at_x = f"{x(at):.1f}"
            parts.append(
                f'<line x1="{at_x}" y1="{top - 5}" x2="{at_x}" y2="{base}" stroke="#333" stroke-dasharray="3,3">'
                f"<title>{name} {_hms(at)}</title></line>"
            )
            rotate = f"rotate(30 {at_x},{base + 30})"
            parts.append(f'<text x="{at_x}" y="{base + 30}" font-size="10" transform="{rotate}">{name}</text>')
    for r in records:
        if r.get("event") == "apply_started":
            cx = x(_ts(r))
            points = f"{cx:.1f},{base - 6} {cx + 6:.1f},{base} {cx:.1f},{base + 6} {cx - 6:.1f},{base}"
            label = xml(f"applied {r.get('remediation')} at {_hms(_ts(r))}")
            parts.append(f'<polygon points="{points}" fill="#1565c0"><title>{label}</title></polygon>')
    for n in sent:
        parts.append(
            f'<circle cx="{x(n["sent"]):.1f}" cy="{base + 14}" r="4" fill="#6a1b9a">'
            f"<title>{xml(n['event'] + ' sent to ' + n['channel'] + ' at ' + _hms(n['sent']))}</title></circle>"
        )
    legend = "blue diamonds: remediations applied; purple dots: notifications sent"
    parts.append(f'<text x="10" y="{height - 10}" fill="#555">{legend}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
