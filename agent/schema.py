"""The runbook format as pydantic models: unknown keys are errors, durations are parsed once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from agent.patterns import PatternError, compile_linear

__all__ = [
    "AlertParam",
    "Approval",
    "CheckStep",
    "Limit",
    "ParamSpec",
    "RemediationStep",
    "Runbook",
    "Severity",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """`3s`, `500ms`, `5m`, `1h`, `1d` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s, 10m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 5s, 10m or 1h, got {value!r}")
        seconds = float(match.group("n")) * _UNIT_SECONDS[match.group("unit")]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError("expected a positive duration")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
# For quiet times, where none at all is a fair choice.
DurationOrZero = Annotated[float, BeforeValidator(lambda v: parse_duration(v, allow_zero=True))]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
RunbookId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*$", max_length=64)]
PluginName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")]
Severity = Literal["SEV-1", "SEV-2", "SEV-3", "SEV-4"]
Approval = Literal["auto", "manual"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ParamSpec(_Strict):
    """A runbook parameter: a default (may be a template over `env` and `config`), overridable."""

    default: Any = None
    secret: bool = Field(False, description="Never shown or recorded: masked everywhere.")
    description: str = ""


def _param_shorthand(value: Any) -> Any:
    # `dsn: "{{ config.database_url }}"` is shorthand for `dsn: {default: ...}`.
    if isinstance(value, dict) and set(value) <= {"default", "secret", "description"}:
        return value
    return {"default": value}


class CheckStep(_Strict):
    id: Identifier
    check: PluginName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = 5.0
    needs: list[Identifier] = Field(default_factory=list, description="Checks that must pass first.")
    description: str = ""


class Limit(_Strict):
    max: int = Field(ge=1)
    per: Duration


class RemediationStep(_Strict):
    id: Identifier
    do: PluginName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = Field(None, description="Expression over `checks` and `params`; absent: always.")
    approval: Approval = "manual"
    limit: Limit | None = Field(None, description="Changes per target per window; default 3 per hour.")
    cooldown: DurationOrZero | None = Field(None, description="Quiet time on a target after a change; default 60s.")
    verify: list[Identifier] = Field(default_factory=list, description="Checks re-run until OK after applying.")
    verify_timeout: Duration = Field(60.0, description="How long verify may wait for the checks to pass.")
    description: str = ""


class Schedule(_Strict):
    every: Duration = Field(description="Run this often (a proactive health sweep), e.g. 5m.")


AlertSource = Annotated[str, StringConstraints(pattern=r"^(labels|annotations)\.[A-Za-z_][A-Za-z0-9_]*$")]


class AlertParam(_Strict):
    """A param an alert may set, and what it may be: an alert never chooses a target the runbook did not
    allow (e.g. `app_service: {from: labels.service, allow: [app]}`)."""

    from_: AlertSource = Field(alias="from", description="`labels.<name>` or `annotations.<name>`.")
    allow: list[str] | None = Field(None, min_length=1, description="The values an alert may give, exactly.")
    pattern: str | None = Field(None, description="Or a regex (RE2) the whole value must match.")

    @model_validator(mode="before")
    @classmethod
    def _not_bare(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                f"say what values an alert may give: {{from: {value}, allow: [...]}} or {{from: {value}, pattern: ...}}"
            )
        return value

    @model_validator(mode="after")
    def _constrained(self) -> AlertParam:
        if (self.allow is None) == (self.pattern is None):
            raise ValueError("give exactly one of allow (a list of values) or pattern (a regex)")
        if self.pattern is not None:
            compile_linear(self.pattern)  # a PatternError (ValueError) names the problem
        return self

    def allows(self, value: str) -> bool:
        if self.allow is not None:
            return value in self.allow
        assert self.pattern is not None
        return compile_linear(self.pattern).fullmatch(value) is not None

    def describe(self) -> str:
        return f"allowed: {', '.join(self.allow)}" if self.allow is not None else f"must match {self.pattern}"


class Runbook(_Strict):
    id: RunbookId
    title: str = Field(min_length=1)
    severity: Severity
    description: str = ""
    symptoms: list[str] = Field(default_factory=list)
    triggers: list[dict[str, str]] = Field(default_factory=list)
    params: dict[Identifier, Annotated[ParamSpec, BeforeValidator(_param_shorthand)]] = Field(default_factory=dict)
    checks: list[CheckStep] = Field(min_length=1)
    remediations: list[RemediationStep] = Field(default_factory=list)
    advice: list[str] = Field(default_factory=list)
    # Alert data reaches a run only through these, each held to the values it may take. The mapped values
    # also name the incident's target (one active run per runbook and target).
    alert_params: dict[Identifier, AlertParam] = Field(default_factory=dict)
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _alert_params_declared(self) -> Runbook:
        unknown = sorted(set(self.alert_params) - set(self.params))
        if unknown:
            raise ValueError(f"alert_params names undeclared params: {', '.join(unknown)}")
        secret = sorted(n for n in self.alert_params if self.params[n].secret)
        if secret:
            raise ValueError(f"alert_params may not set secret params: {', '.join(secret)}")
        return self

    @field_validator("triggers")
    @classmethod
    def _matchers_valid(cls, triggers: list[dict[str, str]]) -> list[dict[str, str]]:
        # Values are Alertmanager matchers: `value` or `=value` (equal), `!=value`, `=~regex`, `!~regex`.
        for trigger in triggers:
            if not trigger:
                raise ValueError("a trigger needs at least one label matcher")
            for label, matcher in trigger.items():
                if matcher.startswith(("=~", "!~")):
                    try:
                        compile_linear(matcher[2:])
                    except PatternError as exc:
                        raise ValueError(f"label {label}: {exc}") from None
        return triggers
