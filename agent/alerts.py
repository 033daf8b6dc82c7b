"""Alerts in: the Alertmanager webhook payload (version 4), a generic alert, and routing to a runbook.

Alert text is data. It is matched against triggers and copied into params only through a runbook's
`alert_params`; it is never rendered as a template and never reaches a shell."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.loader import LoadedRunbook, RunbookSet

__all__ = [
    "AlertmanagerAlert",
    "AlertmanagerPayload",
    "GenericAlert",
    "IncomingAlert",
    "matches",
    "route",
]


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook body (version 4). Unknown fields are accepted, as new versions add some."""

    model_config = ConfigDict(extra="allow")

    version: str = "4"
    groupKey: str | None = None
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    alerts: list[AlertmanagerAlert] = Field(max_length=10_000)


class GenericAlert(BaseModel):
    """An alert from anything that is not Alertmanager."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Becomes the `alertname` label.")
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    severity: str | None = Field(None, max_length=50, description="Becomes the `severity` label.")
    fingerprint: str | None = Field(None, max_length=200)


class IncomingAlert(BaseModel):
    """One alert, whatever its source, as the daemon handles it."""

    source: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str

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
    ) -> IncomingAlert:
        if not fingerprint:
            fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        return cls(source=source, status=status, labels=labels, annotations=annotations, fingerprint=fingerprint)


def matches(trigger: dict[str, str], labels: dict[str, str]) -> bool:
    """Alertmanager matcher semantics: `value`/`=value` equal, `!=value`, `=~regex`, `!~regex` (anchored);
    a missing label is the empty string."""
    for label, matcher in trigger.items():
        value = labels.get(label, "")
        if matcher.startswith("=~"):
            ok = re.fullmatch(matcher[2:], value) is not None
        elif matcher.startswith("!~"):
            ok = re.fullmatch(matcher[2:], value) is None
        elif matcher.startswith("!="):
            ok = value != matcher[2:]
        else:
            ok = value == matcher.removeprefix("=")
        if not ok:
            return False
    return True


def route(runbooks: RunbookSet, alert: IncomingAlert) -> LoadedRunbook | None:
    """The first runbook (by id) with a trigger matching the alert's labels."""
    for runbook_id in runbooks.ids():
        loaded = runbooks.runbooks[runbook_id]
        if any(matches(trigger, alert.labels) for trigger in loaded.spec.triggers):
            return loaded
    return None


def alert_params(runbook: LoadedRunbook, alert: IncomingAlert) -> dict[str, str]:
    """Params taken from the alert, exactly as the runbook maps them; values are plain strings."""
    params: dict[str, str] = {}
    for param, source in runbook.spec.alert_params.items():
        kind, _, key = source.partition(".")
        value = (alert.labels if kind == "labels" else alert.annotations).get(key)
        if value is not None:
            params[param] = value
    return params


def target_key(params: dict[str, Any]) -> str:
    """What an incident is about, for dedup: the mapped values, or '-' when the runbook maps none."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params)) or "-"
