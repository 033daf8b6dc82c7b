"""The guide's communication templates, filled in: the status-page update and the internal update, and the
notification for each incident event built on them. Templates run in jinja2's sandbox; every value put
into one is escaped for the channel it goes to (chat, email, terminal), the template text around it is not."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.notify.escape import for_chat, for_email, for_terminal

__all__ = ["INTERNAL", "STATUS_PAGE", "Flavor", "MessageBook", "Rendered", "TemplateProblem", "Trusted"]

Flavor = Literal["terminal", "chat", "email"]
_ESCAPES: dict[str, Callable[[object], str]] = {"terminal": for_terminal, "chat": for_chat, "email": for_email}
_MAX_BODY = {"terminal": 16_000, "chat": 1_900, "email": 100_000}  # characters of a notification's body

# The guide's "Status Page Update", one line per status.
STATUS_PAGE = """\
{%- if status == "resolved" -%}
🟢 Resolved: The issue with {{ service }} has been resolved. All systems are operational.
{%- elif status in ("identified", "monitoring") -%}
🟡 Identified: We have identified the issue with {{ service }} and are working on a fix.
{%- else -%}
🔴 Investigating: We are currently investigating issues with {{ service }}.
Users may experience {{ impact }}. We will provide updates as soon as possible.
{%- endif -%}
"""

# The guide's "Internal Update".
INTERNAL = """\
[{{ severity }}] Incident: {{ title }}

Status: {{ status_word }}
Impact: {{ impact }}
Start Time: {{ start_time }}
Assigned To: {{ commander }}
Actions Taken:
{% for action in actions %}- {{ action }}
{% else %}- none yet
{% endfor %}Next Steps:
{% for step in next_steps %}- {{ step }}
{% else %}- none
{% endfor %}"""

# What a template may use.
NAMES = (
    "id",
    "title",
    "severity",
    "status",
    "status_word",
    "service",
    "impact",
    "start_time",
    "commander",
    "runbook",
    "actions",
    "next_steps",
)


class Trusted(str):
    """A value the agent itself made (a severity, a status, a time): shown as it is in every channel."""

    __slots__ = ()


class TemplateProblem(ValueError):
    """A template that does not compile or names something unknown."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def _finalize(escape: Callable[[object], str]) -> Callable[[Any], str]:
    def finalize(value: Any) -> str:
        if value is None:
            return ""
        return str(value) if isinstance(value, Trusted | int | float) else escape(value)

    return finalize


class MessageBook:
    """The two templates, compiled once for each kind of channel, and the notification of each event."""

    def __init__(self, status_page: str | None = None, internal: str | None = None) -> None:
        self._sources = {"status_page": status_page or STATUS_PAGE, "internal": internal or INTERNAL}
        self._compiled: dict[tuple[str, str], Any] = {}
        for flavor, escape in _ESCAPES.items():
            env = ImmutableSandboxedEnvironment(
                undefined=StrictUndefined, autoescape=False, finalize=_finalize(escape), keep_trailing_newline=True
            )
            for name, source in self._sources.items():
                try:
                    template = env.from_string(source)
                except TemplateSyntaxError as exc:
                    raise TemplateProblem(f"templates.{name}: template syntax error: {exc.message}") from None
                self._compiled[(flavor, name)] = template
        for name, source in self._sources.items():
            unknown = sorted(_names(source) - set(NAMES))
            if unknown:
                raise TemplateProblem(
                    f"templates.{name}: unknown name {', '.join(unknown)} (available: {', '.join(NAMES)})"
                )

    def render(self, name: str, view: Mapping[str, Any], flavor: Flavor = "terminal") -> str:
        """A template filled in. A team's own template that fails on some incident (it indexes a list that
        is empty, say) falls back to the guide's: a message is never lost to a template."""
        try:
            return str(self._compiled[(flavor, name)].render(**view)).strip()
        except Exception:
            if self._sources[name] in (STATUS_PAGE, INTERNAL):
                raise
            return _guide().render(name, view, flavor)

    def notification(self, kind: str, view: Mapping[str, Any], detail: Mapping[str, Any], flavor: Flavor) -> Rendered:
        """The message for one incident event: a headline for what happened, and the guide's updates."""
        esc = _ESCAPES[flavor]
        ref = f"INC-{view['id']}"
        headline = _HEADLINES[kind](view, detail, esc)
        internal = self.render("internal", view, flavor)
        if kind in ("opened", "status", "resolved", "reopened"):
            body = f"{headline}\n\n{self.render('status_page', view, flavor)}\n\n{internal}"
        else:
            body = f"{headline}\n\n{internal}"
        if len(body) > _MAX_BODY[flavor]:
            # A chat message over the service's limit is refused whole (Discord's is 2,000 characters),
            # and every later page of the incident with it: cut, and say where the rest is.
            note = f"\n... (cut: runbook incident show {view['id']})"
            body = body[: _MAX_BODY[flavor] - len(note)].rsplit("\n", 1)[0] + note
        subject = f"[{view['severity']}] {ref} {kind.replace('_', ' ')}: {for_email(view['title'])}"
        return Rendered(subject[:200], body)


@functools.cache
def _guide() -> MessageBook:
    """The guide's own templates, made once: what a failing custom template falls back to."""
    return MessageBook()


def _names(source: str) -> set[str]:
    from jinja2 import Environment, meta

    # Parsed only, never rendered: the names a template uses.
    return set(meta.find_undeclared_variables(Environment().parse(source)))  # noqa: S701


Headline = Callable[[Mapping[str, Any], Mapping[str, Any], Callable[[object], str]], str]


def _plan_lines(detail: Mapping[str, Any], esc: Callable[[object], str]) -> str:
    return "\n".join(f"  - {esc(change)}" for change in detail.get("changes", [])[:20])


_HEADLINES: dict[str, Headline] = {
    "opened": lambda v, d, e: f"INC-{v['id']} opened ({v['severity']}) by {e(d.get('by', 'a run'))}",
    "reopened": lambda v, d, e: f"INC-{v['id']} reopened: {e(d.get('why', 'it is failing again'))}",
    "status": lambda v, d, e: f"INC-{v['id']} is now {v['status']} ({e(d.get('why', ''))})",
    "resolved": lambda v, d, e: f"INC-{v['id']} resolved ({e(d.get('why', ''))})",
    "severity": lambda v, d, e: (
        f"INC-{v['id']} severity {d.get('from')} -> {d.get('to')} ({e(d.get('why', ''))}, by {e(d.get('by', ''))})"
    ),
    "pending": lambda v, d, e: (
        f"INC-{v['id']}: remediation {e(d['remediation'])} waits for a person's approval"
        f" (plan {e(d['fingerprint'])}):\n{_plan_lines(d, e)}\n"
        f"Approve: runbook approve {e(d['run_id'])} --plan {e(d['fingerprint'])}\n"
        f'Or: POST /v1/runs/{e(d["run_id"])}/approve with {{"fingerprint": "{e(d["fingerprint"])}"}}'
    ),
    "applied": lambda v, d, e: (
        f"INC-{v['id']}: remediation {e(d['remediation'])} applied -> {e(d.get('outcome'))}\n{_plan_lines(d, e)}"
    ),
    "failed": lambda v, d, e: (
        f"INC-{v['id']}: remediation {e(d['remediation'])} failed: {e(d.get('reason', ''))}\n{_plan_lines(d, e)}"
    ),
    "escalated": lambda v, d, e: (
        f"INC-{v['id']} escalated to {e(d['level_name'])} (level {d['level']}): {e(d.get('why', ''))}"
    ),
    "target_missed": lambda v, d, e: (
        f"INC-{v['id']} missed its {d['target']} target ({e(d.get('limit', ''))} for {v['severity']})"
    ),
    "acknowledged": lambda v, d, e: f"INC-{v['id']} acknowledged by {e(d.get('by', ''))}",
    "assigned": lambda v, d, e: f"INC-{v['id']}: incident commander is now {e(d.get('commander', ''))}",
}
