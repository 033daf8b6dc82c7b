"""The policy file: per environment, plan only or apply, which remediations may run unattended, which never
(it can only tighten what a runbook says); and the incident policy (targets, escalation path, channels,
templates). Every problem is reported as `file:line: field: reason`, like a runbook's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.exceptions import ConfigError
from agent.incidents.policy import (
    LEVEL_NAMES,
    EscalationLevel,
    IncidentPolicy,
    IncidentSettings,
    MessageTemplates,
)
from agent.notify.channels import Channel
from agent.sources import Problems, YamlSource

__all__ = ["EnvironmentPolicy", "load_incident_policy", "load_policy"]


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    mode: Literal["plan", "apply"] = Field("apply", description="plan: nothing is ever applied (staging).")
    auto: list[str] | None = Field(
        None,
        description="If set, only these (`runbook.remediation` ids) run without a person; others need approval.",
    )
    deny: list[str] = Field(
        default_factory=list, description="Never applied: `runbook.remediation` ids or plugin names (postgres.restore)."
    )

    def denies(self, runbook: str, remediation: str, plugin: str) -> bool:
        return f"{runbook}.{remediation}" in self.deny or plugin in self.deny

    def approval(self, runbook: str, remediation: str, declared: str) -> str:
        """The approval in force: a runbook's `auto` stays auto only if this environment allows it."""
        if declared == "manual":
            return "manual"
        if self.auto is not None and f"{runbook}.{remediation}" not in self.auto:
            return "manual"
        return "auto"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: dict[str, EnvironmentPolicy] = Field(default_factory=dict)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    channels: dict[str, Channel] = Field(default_factory=dict)
    notify: list[str] = Field(default_factory=list)
    escalation: list[EscalationLevel] = Field(default_factory=list)
    templates: MessageTemplates = Field(default_factory=MessageTemplates)


_LOADED: dict[tuple[Path, int, int], _File] = {}


def _load(path: Path) -> _File:
    """The whole file, validated once (per content) in a process; ConfigError listing every problem."""
    try:
        info = path.stat()
        key = (path, info.st_mtime_ns, info.st_size)
        if key in _LOADED:
            return _LOADED[key]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read policy file: {getattr(exc, 'strerror', None) or exc}") from None
    problems = Problems()
    try:
        source = YamlSource(path, text)
    except Exception as exc:  # yaml.YAMLError and its marks
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: (yaml): not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: (top level): expected a mapping (environments, escalation, channels ...)")
    if source.duplicates:
        source.add_duplicates(problems)
        raise ConfigError("\n".join(problems.items))
    try:
        parsed = _File.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        problems.from_validation(source, exc)
        raise ConfigError("\n".join(problems.items)) from None
    _check(source, parsed, problems)
    if problems.items:
        raise ConfigError("\n".join(problems.items))
    _LOADED[key] = parsed
    return parsed


def _check(source: YamlSource, parsed: _File, problems: Problems) -> None:
    """What the models alone cannot see: expressions and templates compile, channels named exist."""
    from agent.incidents.messages import MessageBook, TemplateProblem
    from agent.templating import TemplateError, Templates

    templates = Templates()
    for i, level in enumerate(parsed.escalation):
        if level.when is not None:
            try:
                templates.check(level.when, expression=True, allowed=dict.fromkeys(LEVEL_NAMES))
            except TemplateError as exc:
                problems.add(source, ("escalation", i, "when"), str(exc))
    try:
        MessageBook(parsed.templates.status_page, parsed.templates.internal)
    except TemplateProblem as exc:
        field, _, reason = str(exc).partition(": ")
        problems.add(source, tuple(field.split(".")), reason)
    try:
        IncidentPolicy(
            incidents=parsed.incidents,
            channels=parsed.channels,
            notify=parsed.notify,
            escalation=parsed.escalation,
            templates=parsed.templates,
        )
    except ValidationError as exc:
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            where, _, reason = message.partition(": ")
            loc = tuple(int(p) if p.isdigit() else p for p in where.replace("[", ".").replace("]", "").split("."))
            problems.add(source, loc, reason)


def load_policy(path: Path | None, environment: str | None) -> EnvironmentPolicy:
    """The policy of `environment` from the policy file; without a file, the runbooks' own approvals."""
    if path is None:
        if environment:
            raise ConfigError(f"environment {environment!r} given but no policy file (RUNBOOK_POLICY)")
        return EnvironmentPolicy()
    parsed = _load(path)
    if not parsed.environments and not environment:
        return EnvironmentPolicy()
    if not environment:
        raise ConfigError(f"{path}: set RUNBOOK_ENV to one of {', '.join(parsed.environments)}")
    if environment not in parsed.environments:
        known = ", ".join(parsed.environments) or "none"
        raise ConfigError(f"{path}: no environment {environment!r} (known: {known})")
    return parsed.environments[environment].model_copy(update={"name": environment})


def load_incident_policy(path: Path | None) -> IncidentPolicy:
    """The incident policy of the policy file; without one, the guide's targets and no channels."""
    if path is None:
        return IncidentPolicy()
    parsed = _load(path)
    return IncidentPolicy(
        incidents=parsed.incidents,
        channels=parsed.channels,
        notify=parsed.notify,
        escalation=parsed.escalation,
        templates=parsed.templates,
    )
