"""Human output of the CLI: live progress, the run report, runbook and plugin descriptions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from agent.loader import LoadedRunbook
from agent.models import CheckResult, RunReport
from agent.redaction import MASK, Redactor
from agent.registry import Registry, UnknownPlugin
from agent.schema import Runbook
from agent.status import Status

__all__ = ["Printer", "audit_line", "show_plugin", "show_runbook"]

_STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}


class Printer:
    """Prints as results arrive. rich decides on colour: only on a terminal, never with NO_COLOR."""

    def __init__(self, redactor: Redactor, *, enabled: bool = True) -> None:
        self.redactor = redactor
        self.enabled = enabled
        self.console = Console(highlight=False, soft_wrap=True, emoji=False)

    def _status(self, status: Status) -> str:
        return f"[{_STYLE[status]}]{status.value:8}[/]"

    def check_line(self, result: CheckResult) -> None:
        summary = escape(self.redactor.text(result.summary))
        self.console.print(
            f"  {self._status(result.status)} {result.id:22} {summary} [dim]({result.duration_ms:.0f} ms)[/]"
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
        with self.console.status("", spinner="dots") if self.console.is_terminal else _null() as status:

            def update(check_id: str, result: CheckResult | None) -> None:
                nonlocal done
                if result is None:
                    running.add(check_id)
                else:
                    running.discard(check_id)
                    done += 1
                    self.check_line(result)
                if status is not None:
                    status.update(f"checks {done}/{total} done; running: {', '.join(sorted(running)) or '-'}")

            yield update

    def report(self, report: RunReport) -> None:
        c = self.console
        c.print(
            f"\nVerdict: {self._status(report.status).rstrip()}  "
            f"[dim]run {report.run_id}, {report.mode}, {report.duration_ms / 1000:.1f}s[/]"
        )
        failing = [r for r in report.checks if r.status is not Status.OK]
        for result in failing:
            code = f" [{result.code}]" if result.code else ""
            c.print(f"  - {result.id}: {escape(self.redactor.text(result.summary))}{escape(code)}")
        applicable = [r for r in report.remediations if r.would_apply]
        if report.remediations:
            c.print("\nRemediations:")
            for rem in report.remediations:
                mark = "would apply" if rem.would_apply else "not needed"
                c.print(f"  {mark:12} {rem.id} ({rem.do}, approval {rem.approval}): {escape(rem.reason)}")
            if applicable:
                c.print("  [dim]Remediations are not executed by this version; they are listed for the engineer.[/]")
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


def show_plugin(registry: Registry, name: str) -> str:
    try:
        spec: Any = registry.check(name)
        kind = "check"
    except UnknownPlugin:
        spec = registry.remediation(name)  # raises UnknownPlugin (a KeyError) with the known names
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
        out += ["Triggers (alert label matchers):"] + [f"  - {json.dumps(t)}" for t in spec.triggers]
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


def audit_line(record: dict[str, Any]) -> str:
    skip = {"ts", "seq", "event", "run_id", "actor", "mode", "runbook", "prev"}
    rest = {k: v for k, v in record.items() if k not in skip}
    if record.get("event") == "check_result":
        rest = {k: rest.get(k) for k in ("id", "status", "summary")}
    body = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in rest.items())
    return f"{record.get('ts')} #{record.get('seq')} {record.get('run_id', '-')} {record.get('event')} {body}"
