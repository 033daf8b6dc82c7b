"""Alerts in: the Alertmanager webhook payload (version 4), a generic alert, and routing to a runbook.

Alert text is data from outside. Its size is bounded here, at intake; it is matched against triggers with
linear-time patterns; it reaches a run only through a runbook's `alert_params`, and only as a value the
runbook allows; it is never rendered as a template and never reaches a shell."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.dataclasses import dataclass as pydantic_dataclass

from agent.loader import LoadedRunbook, RunbookSet
from agent.patterns import compile_linear
from agent.schema import AlertmanagerMatchers, Trigger, label_rule

__all__ = [
    "LIMITS",
    "NO_NUL",
    "AlertmanagerAlert",
    "AlertmanagerPayload",
    "GenericAlert",
    "IncomingAlert",
    "MappedParams",
    "alert_params",
    "matches",
    "named_runbooks",
    "params_refused",
    "route",
    "target_key",
]


@dataclass(frozen=True)
class _Limits:
    """What one alert may carry. Alertmanager sets no limits of its own; these are far above real alerts
    (a few labels of a few dozen characters) and far below what would strain the daemon."""

    alerts: int = 10_000  # per payload: the shipped receiver sets Alertmanager's max_alerts to this
    labels: int = 64
    annotations: int = 64
    name_chars: int = 128
    label_chars: int = 2048
    annotation_chars: int = 8192
    fingerprint_chars: int = 128


LIMITS = _Limits()


# Sizes of everything from outside, and no NUL: PostgreSQL's text refuses it, so a state store there would
# fail the whole batch a payload with one is committed with. (pydantic already refuses a lone surrogate.)
NO_NUL = r"^[^\x00]*$"
LabelName = Annotated[str, StringConstraints(max_length=LIMITS.name_chars, pattern=NO_NUL)]
LabelValue = Annotated[str, StringConstraints(max_length=LIMITS.label_chars, pattern=NO_NUL)]
AnnotationValue = Annotated[str, StringConstraints(max_length=LIMITS.annotation_chars, pattern=NO_NUL)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=LIMITS.labels)]
Annotations = Annotated[dict[LabelName, AnnotationValue], Field(max_length=LIMITS.annotations)]
Fingerprint = Annotated[str, StringConstraints(max_length=LIMITS.fingerprint_chars, pattern=NO_NUL)]
Short = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]


# A slotted record, not a model: a storm's group holds 10,000 of them, and a model per alert (its own field
# dict and set) held over three times the memory and took twice the time to parse.
@pydantic_dataclass(slots=True, config=ConfigDict(extra="ignore"))
class AlertmanagerAlert:
    """One alert of the webhook body."""

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    startsAt: Short | None = None
    endsAt: Short | None = None
    generatorURL: AnnotationValue | None = None
    fingerprint: Fingerprint | None = None


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body (version 4). Unknown fields are accepted (new versions add some) and
    dropped: nothing reads them."""

    model_config = ConfigDict(extra="ignore")

    version: Short = "4"
    groupKey: AnnotationValue | None = None
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: LabelValue
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Annotations = Field(default_factory=dict)
    externalURL: LabelValue | None = None
    alerts: list[AlertmanagerAlert] = Field(max_length=LIMITS.alerts)


class GenericAlert(BaseModel):
    """An alert from anything that is not Alertmanager."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, description="Becomes the `alertname` label.")
    status: Literal["firing", "resolved"] = "firing"
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    severity: str | None = Field(None, max_length=50, pattern=NO_NUL, description="Becomes the `severity` label.")
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True, slots=True)
class IncomingAlert:
    """One alert, whatever its source, as the daemon handles it. Made from a payload already checked
    (its model, above), so a plain slotted record: a storm's 10,000 of them cost a fraction of the time
    and memory of validated models."""

    source: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: float | None = None  # when the alerting system says it began (Alertmanager's startsAt)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @classmethod
    def build(
        cls,
        source: str,
        status: Literal["firing", "resolved"],
        labels: dict[str, str],
        annotations: dict[str, str],
        fingerprint: str | None,
        starts_at: str | None = None,
    ) -> IncomingAlert:
        if not fingerprint:
            fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        return cls(source, status, labels, annotations, fingerprint, _epoch(starts_at))


@functools.lru_cache(maxsize=1024)  # a storm's alerts mostly share a few start times
def _epoch(stamp: str | None) -> float | None:
    """RFC 3339 (Alertmanager's startsAt, nanoseconds and all) as a Unix time; None if absent or unusable."""
    if not stamp or stamp.startswith("0001-"):
        return None
    head, dot, rest = stamp.partition(".")
    if dot:  # Python takes at most microseconds: cut the fraction to 6 digits, keep the zone
        zone = rest.lstrip("0123456789")
        digits = rest[: len(rest) - len(zone)][:6]
        stamp = f"{head}.{digits}{zone}" if digits else f"{head}{zone}"
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def matches(trigger: Trigger, labels: dict[str, str]) -> bool:
    """Alertmanager matcher semantics: `value`/`=value` equal, `!=value`, `=~regex`, `!~regex` (anchored,
    RE2: linear in the label's length); a missing label is the empty string. A trigger is a mapping of
    label to matcher, or Alertmanager's own matcher strings (a label may have several)."""
    return _holds(_compiled(trigger), labels)


# A trigger's rules, parsed once: (label, operator, value, the compiled pattern of =~ and !~).
_Compiled = tuple[tuple[str, str, str, Any], ...]


def _compiled(trigger: Trigger) -> _Compiled:
    rules = trigger.rules() if isinstance(trigger, AlertmanagerMatchers) else map(label_rule, trigger.items())
    compiled = [(label, op, value, compile_linear(value) if op in ("=~", "!~") else None) for label, op, value in rules]
    # All must hold, so their order is free: the comparisons first, so that most alerts are turned away
    # before any pattern runs.
    compiled.sort(key=lambda rule: rule[3] is not None)
    return tuple(compiled)


def _holds(rules: _Compiled, labels: dict[str, str]) -> bool:
    for label, op, expected, pattern in rules:
        value = labels.get(label, "")
        if op == "=~":
            ok = pattern.fullmatch(value) is not None
        elif op == "!~":
            ok = pattern.fullmatch(value) is None
        elif op == "!=":
            ok = value != expected
        else:
            ok = value == expected
        if not ok:
            return False
    return True


def named_runbooks(alert: IncomingAlert) -> list[str]:
    """The runbook ids an alert names, as Prometheus users declare it on the alert rule: a `runbook`
    label, and a `runbook_url` annotation's last path segment (`.../db-connection`, `.../db-connection.md`).
    A URL that does not parse names nothing (it is outside data, never a reason to refuse the payload)."""
    named = [alert.labels.get("runbook", "")]
    url = alert.annotations.get("runbook_url", "")
    if url:
        try:
            tail = urlsplit(url).path.rstrip("/").rpartition("/")[2]
        except ValueError:
            tail = ""
        named += [tail, tail.rpartition(".")[0]]
    return [name for name in named if name]


def route(runbooks: RunbookSet, alert: IncomingAlert) -> LoadedRunbook | None:
    """Among the runbooks whose triggers match the alert's labels, the one the alert names (see
    `named_runbooks`), else the first by id. A name alone routes nowhere: what a runbook takes is what
    its triggers say, so a label or a wiki URL cannot send it an alert it does not accept."""
    matching = [
        loaded for loaded, triggers in _routes(runbooks) if any(_holds(rules, alert.labels) for rules in triggers)
    ]
    if len(matching) > 1:
        for name in named_runbooks(alert):
            for loaded in matching:
                if loaded.spec.id == name:
                    return loaded
    return matching[0] if matching else None


# The routing table of the runbooks loaded now (every alert is routed through it): by id, each with its
# triggers' rules compiled. Made again when the set is (a reload makes a new set).
_table: tuple[RunbookSet, list[tuple[LoadedRunbook, list[_Compiled]]]] | None = None


def _routes(runbooks: RunbookSet) -> list[tuple[LoadedRunbook, list[_Compiled]]]:
    global _table
    table = _table
    if table is None or table[0] is not runbooks:
        rows = [
            (runbooks.runbooks[i], [_compiled(t) for t in runbooks.runbooks[i].spec.triggers]) for i in runbooks.ids()
        ]
        table = _table = (runbooks, rows)
    return table[1]


@dataclass(frozen=True)
class MappedParams:
    """Params an alert supplies, or why it may not: a value its runbook does not allow for that param."""

    params: dict[str, str]
    refused: str | None = None


def alert_params(runbook: LoadedRunbook, alert: IncomingAlert) -> MappedParams:
    """Params taken from the alert exactly as the runbook maps them, each held to what the runbook allows
    (its `allow` list or `pattern`): an alert never picks a target the runbook did not name."""
    params: dict[str, str] = {}
    for param, mapping in runbook.spec.alert_params.items():
        kind, _, key = mapping.from_.partition(".")
        value = (alert.labels if kind == "labels" else alert.annotations).get(key)
        if value is None:
            continue
        if not mapping.allows(value):
            shown = json.dumps(value[:64] + ("..." if len(value) > 64 else ""))
            return MappedParams({}, f"{mapping.from_}={shown} is not allowed for param {param} ({mapping.describe()})")
        params[param] = value
    return MappedParams(params)


def params_refused(runbook: LoadedRunbook, params: Mapping[str, str]) -> str | None:
    """Why params an alert gave (a queued run's, admitted by some agent) are not what this runbook allows
    an alert to give, or None. The agent that takes a run from the shared queue holds them to its own
    runbook again: during a rolling change, another agent may have admitted them under an older, wider
    `allow`."""
    for param, value in params.items():
        mapping = runbook.spec.alert_params.get(param)
        if mapping is None:
            return f"param {param} is not one this runbook takes from an alert"
        if not isinstance(value, str) or not mapping.allows(value):
            return f"param {param} is not allowed ({mapping.describe()})"
    return None


def target_key(params: dict[str, Any]) -> str:
    """What an incident is about, for dedup: the mapped values, or '-' when the runbook maps none."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params)) or "-"
