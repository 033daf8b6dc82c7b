"""What a run produces: check results, remediation decisions and the run report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agent.status import Status

__all__ = ["CheckResult", "RemediationDecision", "RunReport"]


@dataclass(frozen=True)
class CheckResult:
    id: str
    check: str
    status: Status
    summary: str
    duration_ms: float
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def view(self) -> dict[str, Any]:
        """What `when:` expressions see as `checks.<id>`."""
        return {
            "ok": self.ok,
            "status": self.status.value,
            "summary": self.summary,
            "code": self.code,
            "metrics": dict(self.metrics),
            "details": dict(self.details),
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["duration_ms"] = round(self.duration_ms, 1)
        return data


@dataclass(frozen=True)
class RemediationDecision:
    id: str
    do: str
    approval: str
    would_apply: bool
    reason: str
    applied: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunReport:
    run_id: str
    runbook: str
    title: str
    severity: str
    mode: str
    actor: str
    started_at: str
    status: Status = Status.OK
    duration_ms: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    remediations: list[RemediationDecision] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    audit_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "runbook": self.runbook,
            "title": self.title,
            "severity": self.severity,
            "mode": self.mode,
            "actor": self.actor,
            "status": self.status.value,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
            "params": self.params,
            "checks": [c.to_json() for c in self.checks],
            "remediations": [r.to_json() for r in self.remediations],
            "advice": list(self.advice),
        }
        if self.audit_error:
            data["audit_error"] = self.audit_error
        return data
