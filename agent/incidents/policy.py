"""The incident half of the policy file: the guide's severity targets, its escalation path, the channels
people are told through, and the communication templates. Defaults are the guide's; everything is
validated at load like a runbook (file:line: field: reason)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.notify.channels import Channel
from agent.schema import Duration, DurationOrZero, Severity

__all__ = [
    "GUIDE_TARGETS",
    "LEVEL_NAMES",
    "EscalationLevel",
    "IncidentPolicy",
    "IncidentSettings",
    "MessageTemplates",
    "SeverityTarget",
]

SEVERITIES: tuple[Severity, ...] = ("SEV-1", "SEV-2", "SEV-3", "SEV-4")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SeverityTarget(_Strict):
    """Time to acknowledge (response) and to resolve (resolution); none: best effort / next release."""

    response: DurationOrZero | None = None
    resolution: DurationOrZero | None = None


# The guide's table. Its SEV-1 response is "Immediate": read here as acknowledged within 5 minutes.
GUIDE_TARGETS: dict[str, SeverityTarget] = {
    "SEV-1": SeverityTarget(response=300.0, resolution=3600.0),
    "SEV-2": SeverityTarget(response=900.0, resolution=4 * 3600.0),
    "SEV-3": SeverityTarget(response=3600.0, resolution=24 * 3600.0),
    "SEV-4": SeverityTarget(response=None, resolution=None),
}


_ALERT_SEVERITY: dict[str, Severity] = {"critical": "SEV-1", "error": "SEV-2", "warning": "SEV-3", "info": "SEV-4"}


class IncidentSettings(_Strict):
    severities: dict[Severity, SeverityTarget] = Field(
        default_factory=dict, description="Targets per severity; the guide's for those not given."
    )
    reopen_window: Duration = Field(
        3600.0, description="A firing alert this soon after an incident resolved reopens it."
    )
    alert_severity: dict[str, Severity] = Field(
        default_factory=lambda: dict(_ALERT_SEVERITY),
        description="An alert's `severity` label (or SEV-N itself) that raises an incident's severity; never lowers.",
    )

    def target(self, severity: str) -> SeverityTarget:
        """The targets in force: what the policy gives, the guide's for what it leaves out (overriding a
        response time keeps the guide's resolution time)."""
        guide = GUIDE_TARGETS[severity]
        for name, given in self.severities.items():
            if name == severity:
                return SeverityTarget(
                    response=given.response if "response" in given.model_fields_set else guide.response,
                    resolution=given.resolution if "resolution" in given.model_fields_set else guide.resolution,
                )
        return guide


# What an escalation level's `when:` may look at.
LEVEL_NAMES = ("severity", "status", "acknowledged", "response_missed", "resolution_missed", "age", "runbook")


class EscalationLevel(_Strict):
    """One step of the guide's escalation path."""

    name: str = Field(min_length=1, description="Who this is, in the guide's words: Senior Engineer ...")
    notify: list[str] = Field(min_length=1, description="Channels that page them.")
    after: DurationOrZero = Field(0.0, description="Time since the incident was declared before this level.")
    when: str | None = Field(None, description=f"Expression over {', '.join(LEVEL_NAMES)}; absent: always.")
    until: Literal["acknowledged", "resolved"] = Field(
        "resolved", description="What stops this level: an acknowledgement, or only the resolution."
    )
    repeat: Duration | None = Field(None, description="Page again this often until stopped.")


class MessageTemplates(_Strict):
    """Overrides of the guide's templates (jinja2 sandbox; values from incidents are escaped per channel)."""

    status_page: str | None = None
    internal: str | None = None


class IncidentPolicy(_Strict):
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    channels: dict[str, Channel] = Field(default_factory=dict)
    notify: list[str] = Field(default_factory=list, description="Channels told of every incident event.")
    escalation: list[EscalationLevel] = Field(default_factory=list)
    templates: MessageTemplates = Field(default_factory=MessageTemplates)

    @model_validator(mode="after")
    def _channels_known(self) -> IncidentPolicy:
        known = set(self.channels)
        for where, names in [("notify", self.notify)] + [
            (f"escalation[{i}].notify", level.notify) for i, level in enumerate(self.escalation)
        ]:
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(
                    f"{where}: unknown channel {', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
                )
        return self

    @property
    def secrets(self) -> list[str]:
        """Every secret the channels hold, for the redactor."""
        out: list[str] = []
        for channel in self.channels.values():
            out.extend(channel.secrets)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "targets": {s: self.incidents.target(s).model_dump() for s in SEVERITIES},
            "escalation": [level.name for level in self.escalation],
            "channels": sorted(self.channels),
        }
