"""Prometheus metrics of the daemon, in a registry of their own (nothing registered at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agent.models import RunReport

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.alerts_received = Counter("runbook_alerts_received", "Alerts received.", ["source"], registry=r)
        self.alerts_deduplicated = Counter(
            "runbook_alerts_deduplicated", "Alerts that joined an incident already being handled.", registry=r
        )
        self.alerts_unrouted = Counter("runbook_alerts_unrouted", "Alerts no runbook matched.", registry=r)
        self.requests_rejected = Counter(
            "runbook_requests_rejected", "Requests refused (auth, size, payload).", ["reason"], registry=r
        )
        self.runs = Counter(
            "runbook_runs", "Runs finished, by runbook and final status.", ["runbook", "status"], registry=r
        )
        self.remediations = Counter(
            "runbook_remediations", "Remediation decisions and outcomes.", ["remediation", "outcome"], registry=r
        )
        self.check_duration = Histogram(
            "runbook_check_duration_seconds",
            "Duration of checks.",
            ["check"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def observe(self, report: RunReport) -> None:
        self.runs.labels(runbook=report.runbook, status=report.exit_status.value).inc()
        for check in report.checks:
            self.check_duration.labels(check=check.check).observe(check.duration_ms / 1000)
        for rem in report.remediations:
            if rem.would_apply:
                self.remediations.labels(remediation=rem.do, outcome=rem.outcome or rem.decision).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
