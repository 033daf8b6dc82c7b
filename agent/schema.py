"""The runbook format as pydantic models: unknown keys are errors, durations are parsed once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

__all__ = [
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
    # Alert data reaches a run only through these: param -> `labels.<name>` or `annotations.<name>`.
    # The mapped values also name the incident's target (one active run per runbook and target).
    alert_params: dict[Identifier, AlertSource] = Field(default_factory=dict)
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _alert_params_declared(self) -> Runbook:
        unknown = sorted(set(self.alert_params) - set(self.params))
        if unknown:
            raise ValueError(f"alert_params names undeclared params: {', '.join(unknown)}")
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
                        re.compile(matcher[2:])
                    except re.error as exc:
                        raise ValueError(f"label {label}: invalid regex {matcher[2:]!r}: {exc}") from None
        return triggers
