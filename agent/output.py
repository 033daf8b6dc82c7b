"""Human output of the CLI: live progress, the run report, runbook and plugin descriptions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from agent.changes import Plan
from agent.exceptions import UnknownName
from agent.loader import LoadedRunbook
from agent.models import CheckResult, RemediationDecision, RunReport
from agent.redaction import MASK, Redactor
from agent.registry import Registry, UnknownPlugin
from agent.schema import RemediationStep, Runbook
from agent.status import Status
from agent.terminal import APPROVE_PROMPT, is_yes, printable

__all__ = ["Printer", "after_run", "audit_line", "show_plugin", "show_runbook"]

_STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}


class Printer:
    """Prints as results arrive. rich decides on colour: only on a terminal, never with NO_COLOR."""

    def __init__(
        self, redactor: Redactor, *, enabled: bool = True, console: Console | None = None, spinner: bool = True
    ) -> None:
        self.redactor = redactor
        self.enabled = enabled
        self.console = console or Console(highlight=False, soft_wrap=True, emoji=False)
        self.spinner = spinner  # off when the output is rendered for another process's terminal
        self._status: Any = None

    def _t(self, text: Any) -> str:
        """Outside text for the terminal: secrets masked, control characters escaped, no rich markup."""
        return escape(printable(self.redactor.text(str(text))))

    def plan_lines(self, plan: Plan) -> list[str]:
        return [f"    - {self._t(c.summary)}" for c in plan.changes]

    def show_approval(self, step: RemediationStep, plan: Plan) -> None:
        """The exact plan a person is asked to approve."""
        self.console.print(f"\n[bold]Approve {step.id}[/] ({step.do}, plan {plan.fingerprint}):")
        for line in self.plan_lines(plan):
            self.console.print(line)

    def ask_approval(self, step: RemediationStep, plan: Plan) -> bool:
        """Show the exact plan and ask y/N (the spinner pauses while a person reads)."""
        if self._status is not None:
            self._status.stop()
        self.show_approval(step, plan)
        answer = is_yes(self.console.input(APPROVE_PROMPT, markup=False))
        if self._status is not None:
            self._status.start()
        return answer

    def _status_text(self, status: Status) -> str:
        return f"[{_STYLE[status]}]{status.value:8}[/]"

    def _remediation(self, rem: RemediationDecision) -> None:
        c = self.console
        if not rem.would_apply:
            c.print(f"  not needed   {rem.id} ({rem.do}): {self._t(rem.reason)}")
            return
        outcome = f" -> {rem.outcome}" if rem.outcome else ""
        c.print(f"  {rem.decision:12} {rem.id} ({rem.do}, approval {rem.approval}){outcome}")
        c.print(f"      why: {self._t(rem.reason)}")
        if rem.decision_reason:
            c.print(f"      decision: {self._t(rem.decision_reason)}")
        if rem.plan:
            c.print(f"      plan {rem.plan['fingerprint']}:")
            for change in rem.plan["changes"]:
                c.print(f"        - {self._t(change['summary'])}")
        for result in rem.results:
            c.print(f"      applied: {self._t(result.get('change'))}: {self._t(result.get('outcome'))}")
        for check in rem.verify:
            c.print(f"      verify: {check['id']} {check['status']} {self._t(check['summary'])}")

    def check_line(self, result: CheckResult) -> None:
        summary = self._t(result.summary)
        self.console.print(
            f"  {self._status_text(result.status)} {result.id:22} {summary} [dim]({result.duration_ms:.0f} ms)[/]"
        )

    @contextmanager
    def progress(self, spec: Runbook) -> Iterator[Any]:
        """A callback for the executor; on a terminal a spinner shows which checks are still running."""
        if not self.enabled:
            yield None
            return
        self.console.print(f"[bold]{escape(spec.title)}[/] ({spec.id}, {spec.severity})")
        total = len(spec.checks)
        running: set[str] = set()
        done = 0
        live = self.spinner and self.console.is_terminal
        with self.console.status("", spinner="dots") if live else _null() as status:
            self._status = status

            def update(check_id: str, result: CheckResult | None) -> None:
                nonlocal done
                if result is None:
                    running.add(check_id)
                else:
                    running.discard(check_id)
                    done += 1
                    self.check_line(result)
                if status is not None:
                    # A step with hosts is a result per engine: the total is at least what has been seen.
                    of = max(total, done + len(running))
                    status.update(f"checks {done}/{of} done; running: {', '.join(sorted(running)) or '-'}")

            yield update
        self._status = None

    def report(self, report: RunReport) -> None:
        c = self.console
        c.print(
            f"\nVerdict: {self._status_text(report.status).rstrip()}  "
            f"[dim]run {report.run_id}, {report.mode}, {report.duration_ms / 1000:.1f}s[/]"
        )
        failing = [r for r in report.checks if r.status is not Status.OK]
        for result in failing:
            code = f" [{result.code}]" if result.code else ""
            c.print(f"  - {result.id}: {self._t(result.summary)}{escape(code)}")
        if report.remediations:
            c.print("\nRemediations:")
            for rem in report.remediations:
                self._remediation(rem)
        if report.final_status is not None:
            c.print(f"\nAfter remediation: {self._status_text(report.final_status).rstrip()}")
            for result in report.final_checks:
                if result.status is not Status.OK:
                    c.print(f"  - {result.id}: {self._t(result.summary)}")
        for escalation in report.escalations:
            c.print(f"\n[bold red]ESCALATE[/] {self._t(escalation)}")
        if report.advice and report.status is not Status.OK:
            c.print("\nAdvice:")
            for line in report.advice:
                c.print(f"  - {escape(line)}")


@contextmanager
def _null() -> Iterator[None]:
    yield None


def _fields(model: type[BaseModel]) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        doc = f" - {field.description}" if field.description else ""
        lines.append(f"    {name}: {kind} ({default}){doc}")
    return lines


def plugin_json(registry: Registry, name: str) -> dict[str, Any]:
    """A check or remediation for --json: its kind, what it does, and its params as JSON Schema."""
    show_plugin(registry, name)  # the same one-line error for an unknown name
    try:
        spec: Any = registry.check(name)
        found: dict[str, Any] = {"name": name, "kind": "check"}
    except UnknownPlugin:
        spec = registry.remediation(name)
        found = {"name": name, "kind": "remediation", "effects": list(spec.effects)}
    return {**found, "doc": spec.doc, "params": spec.params.model_json_schema()}


def show_plugin(registry: Registry, name: str) -> str:
    try:
        spec: Any = registry.check(name)
        kind = "check"
    except UnknownPlugin:
        try:
            spec = registry.remediation(name)
        except UnknownPlugin:
            raise UnknownName(
                f"unknown check or remediation {name!r} (checks: {', '.join(registry.check_names())};"
                f" remediations: {', '.join(registry.remediation_names())})"
            ) from None
        kind = "remediation"
    lines = [f"{name} ({kind})", f"  {spec.doc}"]
    if kind == "remediation":
        lines.append(f"  effects: {', '.join(spec.effects)}")
    lines.append("  with:")
    lines.extend(_fields(spec.params) or ["    (no parameters)"])
    return "\n".join(lines)


def show_runbook(runbook: LoadedRunbook, registry: Registry) -> str:
    spec = runbook.spec
    out = [f"{spec.title} ({spec.id}, {spec.severity})  {runbook.path}"]
    if spec.description:
        out.append(f"  {spec.description}")
    if spec.symptoms:
        out += ["Symptoms:"] + [f"  - {s}" for s in spec.symptoms]
    if spec.triggers:
        out += ["Triggers (alert label matchers):"] + [
            f"  - {json.dumps(t if isinstance(t, dict) else t.model_dump())}" for t in spec.triggers
        ]
    if spec.params:
        out.append("Params:")
        for name, param in spec.params.items():
            shown = MASK if param.secret else param.default
            out.append(f"  {name} = {shown!r}" + (" (secret)" if param.secret else ""))
    out.append("Checks:")
    for step in spec.checks:
        needs = f" after {', '.join(step.needs)}" if step.needs else ""
        out.append(f"  {step.id}: {step.check}{needs}, timeout {step.timeout:g}s")
        out.append(f"      {step.description or registry.check(step.check).doc.splitlines()[0]}")
    if spec.remediations:
        out.append("Remediations:")
        for rem in spec.remediations:
            out.append(f"  {rem.id}: {rem.do} (approval {rem.approval}) when {rem.when or 'status is not OK'}")
    if spec.advice:
        out += ["Advice:"] + [f"  - {a}" for a in spec.advice]
    return "\n".join(out)


_AUDIT_FIELDS = {
    "check_result": ("phase", "id", "status", "summary"),
    "remediation_decision": ("id", "would_apply", "decision", "decision_reason", "approver", "outcome", "escalation"),
}


def audit_line(record: dict[str, Any]) -> str:
    """One readable line per audit record; `--json` shows everything."""
    skip = {"ts", "seq", "event", "run_id", "actor", "mode", "runbook", "prev"}
    event = record.get("event")
    rest = {k: v for k, v in record.items() if k not in skip}
    if event in _AUDIT_FIELDS:
        rest = {k: rest[k] for k in _AUDIT_FIELDS[event] if rest.get(k) not in (None, "", "diagnose")}
    elif event == "remediation_planned":
        plan = rest.get("plan") or {}
        rest = {
            "remediation": rest.get("remediation"),
            "plan": plan.get("fingerprint"),
            "changes": [c.get("summary") for c in plan.get("changes", [])],
        }
    elif event == "apply_finished":
        rest = {**rest, "results": [f"{r.get('change')}: {r.get('outcome')}" for r in rest.get("results", [])]}
    body = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in rest.items())
    return f"{record.get('ts')} #{record.get('seq')} {record.get('run_id', '-')} {event} {body}"


def after_run(
    report: RunReport,
    record: Any,
    trouble: str | None,
    *,
    output: Literal["text", "json", "nagios"],
    printer: Printer,
    raw: Callable[[str], None],
    echo: Callable[..., None],
) -> None:
    """What `runbook run` prints once its run is over, wherever the run happened (in the command itself
    or in the local daemon it was handed to): the report, its JSON or its Nagios plugin output, the
    incident, and warnings on stderr. `raw` writes a line as is; `echo(text, err=False)` masks secrets
    and escapes control codes."""
    if output in ("json", "nagios"):
        data = report.to_json()
        data["incident"] = record.id if record else None
        if trouble:
            data["incident_error"] = trouble
        data = printer.redactor.data(data)
        if output == "nagios":
            from agent.nagios import render

            raw(render(data))
        else:
            raw(json.dumps(data, indent=2))
    else:
        printer.report(report)
        if record is not None:
            echo(f"\nIncident INC-{record.id} ({record.severity}): {record.status} - runbook incident show {record.id}")
    if report.audit_error:
        echo(f"runbook: warning: {report.audit_error}", err=True)
    if trouble:
        echo(f"runbook: warning: the incident was not updated: {trouble}", err=True)
    for escalation in report.escalations:
        echo(f"runbook: ESCALATE {report.runbook} {escalation}", err=True)
