"""What a run produces: check results, remediation decisions and the run report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
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
    thresholds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

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
        # As `asdict` would make it, without its deep copy of every leaf (a run makes dozens of these).
        return {
            "id": self.id,
            "check": self.check,
            "status": self.status.value,
            "summary": self.summary,
            "duration_ms": round(self.duration_ms, 1),
            "details": _copied(self.details),
            "metrics": dict(self.metrics),
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "code": self.code,
        }


def _copied(value: Any) -> Any:
    """A copy of JSON-like data (its containers; the leaves are immutable), dataclasses as dicts (as
    `asdict` made them: the audit log redacts what is inside them)."""
    if is_dataclass(value) and not isinstance(value, type):
        return _copied(asdict(value))
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(v) for v in value]
    return value


@dataclass
class RemediationDecision:
    """What became of one remediation in a run: whether it applied, its plan, the decision and outcome."""

    id: str
    do: str
    approval: str
    would_apply: bool
    reason: str
    # planned_only | nothing_to_do | plan_failed | denied | pending | rejected | applied | not_needed
    decision: str = "not_needed"
    decision_reason: str = ""
    approver: str | None = None
    plan: dict[str, Any] | None = None
    applied: bool = False
    # resolved | not_resolved | apply_failed | applied (nothing to verify); None when nothing was applied
    outcome: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    verify: list[dict[str, Any]] = field(default_factory=list)
    escalation: str | None = None

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
    # After remediations were applied, the checks are run once more: the state the run leaves behind.
    final_status: Status | None = None
    final_checks: list[CheckResult] = field(default_factory=list)

    @property
    def exit_status(self) -> Status:
        return self.final_status or self.status

    @property
    def escalations(self) -> list[str]:
        return [f"{r.id}: {r.escalation}" for r in self.remediations if r.escalation]

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
        if self.final_status is not None:
            data["final_status"] = self.final_status.value
            data["final_checks"] = [c.to_json() for c in self.final_checks]
        if self.audit_error:
            data["audit_error"] = self.audit_error
        return data
