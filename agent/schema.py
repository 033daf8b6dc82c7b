"""The runbook format as pydantic models: unknown keys are errors, durations are parsed once."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agent.patterns import PatternError, compile_linear

__all__ = [
    "AlertParam",
    "AlertmanagerMatchers",
    "Approval",
    "CheckStep",
    "Duration",
    "DurationMs",
    "DurationOrZero",
    "Limit",
    "ParamSpec",
    "RemediationStep",
    "Runbook",
    "Severity",
    "label_rule",
    "parse_duration",
    "parse_matcher",
]

# Prometheus's and Go's duration forms: one or more <number><unit> (`90s`, `1m30s`, `1h30m`, `2w`, `1.5h`,
# `500ms`), or a bare number of seconds. Linear: each number ends at a unit letter, nothing to backtrack.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # `1`, `1.5`, `1.`, `.5` (as Go); ASCII digits only
_UNITS = r"(?:ns|us|µs|μs|ms|s|m|h|d|w|y)"  # µs: the micro sign or the Greek mu, as Go takes both
_DURATION_PART = re.compile(rf"({_NUMBER})({_UNITS})")
_DURATION = re.compile(rf"(?:{_NUMBER}{_UNITS})+")
_LONGEST = 100 * 365 * 86400.0  # a century: past it, a value is a mistake (and would overflow a socket timeout)
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,  # as Prometheus counts a year
}
_DURATION_HELP = "expected a duration like 90s, 1m30s, 1h30m, 2w or a number of seconds"


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """A duration in Prometheus's or Go's form (`90s`, `1m30s`, `1h30m`, `2w`, `500ms`, `1.5h`) or a
    number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HELP)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = "".join(str(value).split())  # `5 m` as `5m`, as before
        if len(text) > 64:
            raise ValueError(f"{_DURATION_HELP}, got a {len(text)}-character value")
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{_DURATION_HELP}, got {value!r}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(_DURATION_HELP)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError("expected a positive duration")
    if seconds > _LONGEST:
        raise ValueError(f"expected a duration of at most 100y, got {value!r}")
    return seconds


# What editors check as a duration is typed (agent.runbook_schema): the same forms, in JSON Schema's
# regex dialect (ECMA-262), a number also allowed.
DURATION_PATTERN = rf"^\s*{_NUMBER}\s*(?:{_UNITS}(?:\s*{_NUMBER}\s*{_UNITS})*\s*)?$"


def _duration_json(*, zero: bool, unit: str = "seconds") -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum" if zero else "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": f"A duration: 90s, 1m30s, 1h30m, 2w, 500ms, or a number of {unit}.",
        }
    )


Duration = Annotated[float, BeforeValidator(parse_duration), _duration_json(zero=False)]
# For quiet times, where none at all is a fair choice.
DurationOrZero = Annotated[
    float, BeforeValidator(lambda v: parse_duration(v, allow_zero=True)), _duration_json(zero=True)
]


def _milliseconds(value: Any) -> Any:
    # A bare number stays milliseconds (what these params always took) — also as text, as a template or
    # --param gives it; a duration with a unit is converted.
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and re.fullmatch(_NUMBER, value.strip()):
        return float(value)
    return parse_duration(value) * 1000.0


# Thresholds in milliseconds (an HTTP check's latency): `250` or `250ms`, `1.5s`.
DurationMs = Annotated[float, BeforeValidator(_milliseconds), _duration_json(zero=False, unit="milliseconds")]
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


def _selectors(value: Any) -> Any:
    """`hosts:` as one selector or a list of them, always a list after validation."""
    from agent.inventory import valid_selector

    items = [value] if isinstance(value, str) else value
    if isinstance(items, list):
        for item in items:
            if isinstance(item, str) and not valid_selector(item):
                raise ValueError(
                    f"{item!r} is not a host selector (an engine's name, `all`, `key=value`, `failing:CHECK`"
                    " or a template naming one engine)"
                )
    return items


Hosts = Annotated[list[Annotated[str, StringConstraints(max_length=200)]], BeforeValidator(_selectors)]
HOSTS_HELP = (
    "Engines of the inventory (`engines` in config) to run on, each its own result (`id@host`): an engine's name,"
    " `all`, a label `key=value`, or a template naming one engine; absent: the default engine."
)


class CheckStep(_Strict):
    id: Identifier
    check: PluginName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = 5.0
    needs: list[Identifier] = Field(default_factory=list, description="Checks that must pass first.")
    hosts: Hosts | None = Field(None, min_length=1, max_length=20, description=HOSTS_HELP)
    description: str = ""


class Rollout(_Strict):
    """How a change across hosts goes: `batch` hosts at a time, each batch verified before the next, and
    stopped once more than `max_errors` hosts failed (SSM Automation's MaxConcurrency and MaxErrors)."""

    batch: int = Field(1, ge=1, le=100, description="Hosts changed at once (1: one host at a time).")
    max_errors: int = Field(0, ge=0, le=100, description="Hosts that may fail before the rollout stops (0).")


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
    hosts: Hosts | None = Field(
        None,
        min_length=1,
        max_length=20,
        description=HOSTS_HELP + " `failing:CHECK`: the hosts where that check is not OK. Planned on every host"
        " first (one plan, one approval), then applied host by host as `rollout` says.",
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How a change across hosts goes.")
    verify_timeout: Duration = Field(60.0, description="How long verify may wait for the checks to pass.")
    silence: bool = Field(
        False,
        description="Silence the alert that started the run in Alertmanager (alertmanager_url in config) while"
        " this remediation is applied and verified; expired when verified or failed.",
    )
    silence_timeout: Duration | None = Field(
        None,
        description="The longest the silence lasts should the agent never end it (at least verify_timeout,"
        " at most 1d); default verify_timeout + 10m.",
    )
    silence_grace: DurationOrZero = Field(
        120.0,
        description="How long the silence stays once the fix is verified, so the alert can resolve (2m, at most"
        " 1h); 0: none. A fix that fails ends it at once.",
    )
    description: str = ""

    @model_validator(mode="after")
    def _silence_timeout_silences(self) -> RemediationStep:
        if not self.silence and (self.silence_timeout is not None or "silence_grace" in self.model_fields_set):
            raise ValueError("silence_timeout and silence_grace are for a remediation with silence: true")
        if self.silence_timeout is not None and not self.verify_timeout <= self.silence_timeout <= 86400:
            raise ValueError("silence_timeout must be at least verify_timeout and at most 1d")
        if self.silence_grace > 3600:
            raise ValueError("silence_grace must be at most 1h")
        return self


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


# One Alertmanager matcher as alertmanager.yml writes it: `alertname=~"Db.*"`, `severity!="info"`,
# `team=db` (a bare value too). Label names as Prometheus's; the value quoted as in Go, or bare — a bare
# one without `,`, `{` or `}`: Alertmanager splits `a=1,b=2` into two matchers, which here are two items.
_AM_MATCHER = re.compile(
    r'\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s",{}]*)\s*'
)
Rule = tuple[str, str, str]  # label, operator (=, !=, =~, !~), value


def parse_matcher(text: str) -> Rule:
    """An Alertmanager matcher string -> (label, operator, value)."""
    found = _AM_MATCHER.fullmatch(text) if len(text) <= 4096 else None
    if found is None:
        raise ValueError(
            f'expected one matcher like alertname="X", severity!="info" or job=~"db.*" per item, got {text!r}'
        )
    value = found.group("value")
    if value.startswith('"'):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"matcher {text!r}: the quoted value is not valid") from None
    return found.group("label"), found.group("op"), value


def label_rule(item: tuple[str, str]) -> Rule:
    """A trigger mapping's entry (`label: matcher`) -> (label, operator, value): `value` or `=value` is
    equality, `!=value`, `=~regex`, `!~regex`."""
    label, matcher = item
    for op in ("=~", "!~", "!="):
        if matcher.startswith(op):
            return label, op, matcher[2:]
    return label, "=", matcher.removeprefix("=")


class AlertmanagerMatchers(_Strict):
    """A trigger pasted from an alertmanager.yml route: `matchers: ['alertname=~"Db.*"', 'severity!="info"']`,
    all of which must hold (a label may appear in several)."""

    matchers: list[str] = Field(min_length=1)

    @field_validator("matchers")
    @classmethod
    def _parse(cls, matchers: list[str]) -> list[str]:
        for matcher in matchers:
            label, op, value = parse_matcher(matcher)
            if op in ("=~", "!~"):
                try:
                    compile_linear(value)
                except PatternError as exc:
                    raise ValueError(f"label {label}: {exc}") from None
        return matchers

    def rules(self) -> list[Rule]:
        return [parse_matcher(m) for m in self.matchers]


def _trigger_kind(value: Any) -> str:
    # Any mapping with a `matchers` key is that form: `matchers: 'a="b"'` (a string) is then an error,
    # not a trigger on a label named "matchers" that never fires.
    is_matchers = isinstance(value, AlertmanagerMatchers) or (isinstance(value, dict) and "matchers" in value)
    return "<matchers>" if is_matchers else "<labels>"


# A mapping of label to matcher, or `matchers:` with Alertmanager's strings (told apart by that list, so
# a mistake in one form is reported in that form's terms only).
Trigger = Annotated[
    Annotated[dict[str, str], Tag("<labels>")] | Annotated[AlertmanagerMatchers, Tag("<matchers>")],
    Discriminator(_trigger_kind),
]


class Runbook(_Strict):
    id: RunbookId
    title: str = Field(min_length=1)
    severity: Severity
    description: str = ""
    symptoms: list[str] = Field(default_factory=list)
    triggers: list[Trigger] = Field(default_factory=list)
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
    def _matchers_valid(cls, triggers: list[Trigger]) -> list[Trigger]:
        # Values are Alertmanager matchers: `value` or `=value` (equal), `!=value`, `=~regex`, `!~regex`.
        for trigger in triggers:
            if isinstance(trigger, AlertmanagerMatchers):
                continue  # checked as it was parsed
            if not trigger:
                raise ValueError("a trigger needs at least one label matcher")
            for label, matcher in trigger.items():
                if matcher.startswith(("=~", "!~")):
                    try:
                        compile_linear(matcher[2:])
                    except PatternError as exc:
                        raise ValueError(f"label {label}: {exc}") from None
        return triggers
