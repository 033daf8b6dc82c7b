"""The daemon's work: take alerts (recorded before they are answered), route them, dedup storms, run
runbooks on a bounded queue, run scheduled sweeps, and shut down without starting new remediations."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from agent.alerts import IncomingAlert, alert_params, route, target_key
from agent.audit import AuditLog
from agent.config import Settings
from agent.executor import Executor
from agent.loader import RunbookSet
from agent.metrics import Metrics
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor
from agent.state import StateStore

__all__ = ["Daemon", "Disposition", "QueueFull"]


class QueueFull(Exception):
    """More runs waiting than the queue holds: the sender should retry later (Alertmanager does)."""


@dataclass(frozen=True)
class Disposition:
    fingerprint: str
    status: str
    outcome: str  # run_started | deduplicated | no_runbook | resolved
    runbook: str | None = None
    run_id: str | None = None
    reason: str = ""
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "") and k != "target"}


class Daemon:
    def __init__(
        self,
        runbooks: RunbookSet,
        settings: Settings,
        redactor: Redactor,
        *,
        policy: EnvironmentPolicy,
        dry_run: bool = False,
        workers: int = 2,
        queue_size: int = 100,
        dedup_window: float = 300.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.runbooks = runbooks
        self.settings = settings
        self.redactor = redactor
        self.policy = policy
        self.dry_run = dry_run
        self.dedup_window = dedup_window
        self.metrics = metrics or Metrics()
        self.state = StateStore(settings.state_path)
        self.audit = AuditLog(settings.audit_path, redactor, actor="daemon")
        self.executor = Executor(runbooks, settings, redactor, self.audit, policy=policy, state=self.state)
        self.stopping = threading.Event()
        self._queue: queue.Queue[tuple[str, str, dict[str, str], str, str]] = queue.Queue(maxsize=queue_size)
        self._workers = [threading.Thread(target=self._work, name=f"run-{i}", daemon=True) for i in range(workers)]
        self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        # Routing and dedup decisions are made one alert at a time, so two copies cannot both start a run.
        self._admit = threading.Lock()
        self._running: set[str] = set()

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        for run_id in self.state.interrupt_orphans():
            # Left running by a process that died: recorded as interrupted, never resumed or re-applied.
            self.audit.record("run_interrupted", run_id=run_id, reason="the process running it ended (crash or kill)")
        for worker in self._workers:
            worker.start()
        self._scheduler.start()

    def stop(self, deadline: float = 30.0) -> None:
        """Start nothing new; let in-flight checks finish (up to the deadline); queued runs are interrupted."""
        self.stopping.set()
        end = time.monotonic() + deadline
        while True:
            try:
                run_id = self._queue.get_nowait()[0]
            except queue.Empty:
                break
            self.state.set_run(run_id, "interrupted", result="interrupted")
            self.audit.record("run_interrupted", run_id=run_id, reason="daemon stopped before it began")
        for worker in self._workers:
            worker.join(max(0.0, end - time.monotonic()))
        for run in self.state.runs(status="running"):
            if run["run_id"] in self._running:
                self.state.set_run(run["run_id"], "interrupted", result="interrupted")
                self.audit.record("run_interrupted", run_id=run["run_id"], reason="daemon stopped mid-run")

    @property
    def ready(self) -> bool:
        return not self.stopping.is_set() and all(w.is_alive() for w in self._workers)

    # --- alerts -------------------------------------------------------------------------------------------

    def receive(self, alerts: list[IncomingAlert]) -> list[Disposition]:
        """Record and route alerts; new runs are queued. Returns once everything is durably recorded:
        the alerts in the state store (one transaction), a summary in the audit log (one record)."""
        with self._admit:
            # Routing and dedup one payload at a time, so two copies cannot both start a run.
            decided: dict[tuple[str, str], Disposition] = {}
            results = [self._admit_one(alert, decided) for alert in alerts]
            self.state.add_alerts(
                [
                    {
                        "source": a.source,
                        "fingerprint": a.fingerprint,
                        "status": a.status,
                        "name": a.name,
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "runbook": r.runbook,
                        "target": r.target,
                        "disposition": r.outcome,
                        "run_id": r.run_id,
                    }
                    for a, r in zip(alerts, results, strict=True)
                ]
            )
        summary: dict[tuple[Any, ...], list[str]] = {}
        for alert, result in zip(alerts, results, strict=True):
            key = (alert.name, alert.status, result.outcome, result.runbook, result.run_id, result.reason)
            summary.setdefault(key, []).append(alert.fingerprint)
        self.audit.record(
            "alerts_received",
            count=len(alerts),
            source=alerts[0].source if alerts else None,
            groups=[
                {
                    "alertname": k[0],
                    "status": k[1],
                    "outcome": k[2],
                    "runbook": k[3],
                    "run_id": k[4],
                    "reason": k[5],
                    "count": len(fps),
                    "fingerprints": fps[:5],
                }
                for k, fps in summary.items()
            ],
        )
        for alert, result in zip(alerts, results, strict=True):
            self.metrics.alerts_received.labels(source=alert.source).inc()
            if result.outcome == "deduplicated":
                self.metrics.alerts_deduplicated.inc()
            elif result.outcome == "no_runbook":
                self.metrics.alerts_unrouted.inc()
        return results

    def _admit_one(self, alert: IncomingAlert, decided: dict[tuple[str, str], Disposition]) -> Disposition:
        runbook = route(self.runbooks, alert)
        if runbook is None:
            return Disposition(alert.fingerprint, alert.status, "no_runbook", reason="no runbook trigger matches")
        params = alert_params(runbook, alert)
        target = target_key(params)
        name = runbook.spec.id

        def result(outcome: str, run_id: str | None = None, reason: str = "") -> Disposition:
            return Disposition(alert.fingerprint, alert.status, outcome, name, run_id, reason, target)

        if alert.status == "resolved":
            # The incident is over: the next firing alert for it may start a run again.
            decided.pop((name, target), None)
            self.state.resolve_incident(name, target)
            return result("resolved", reason="incident closed")
        if (name, target) in decided:
            return result("deduplicated", decided[(name, target)].run_id, "a run for this incident is in progress")
        active = self.state.active_run(name, target)
        recent = active or self.state.recent_run(name, target, time.time() - self.dedup_window)
        if recent:
            why = "a run for this incident is in progress" if active else "a run for this incident just ran"
            decided[(name, target)] = result("deduplicated", recent, why)
            return decided[(name, target)]
        if self.stopping.is_set():
            raise QueueFull("the daemon is shutting down")
        run_id = uuid.uuid4().hex[:12]
        actor = f"alert:{alert.name}:{alert.fingerprint}"
        self.state.add_run(
            run_id=run_id,
            runbook=name,
            target=target,
            mode="dry-run" if self.dry_run else "live",
            actor=actor,
            params=params,
            status="queued",
        )
        try:
            self._queue.put_nowait((run_id, name, params, actor, target))
        except queue.Full:
            self.state.set_run(run_id, "interrupted", result="queue_full")
            raise QueueFull(f"{self._queue.maxsize} runs already waiting") from None
        decided[(name, target)] = result("deduplicated", run_id, "a run for this incident is in progress")
        return result("run_started", run_id)

    # --- scheduled sweeps -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        due: dict[str, float] = {}
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            for loaded in self.runbooks.runbooks.values():
                schedule = loaded.spec.schedule
                if schedule is None or now < due.get(loaded.spec.id, 0.0):
                    continue
                due[loaded.spec.id] = now + schedule.every
                if self.state.active_run(loaded.spec.id, "-"):
                    continue
                run_id = uuid.uuid4().hex[:12]
                self.state.add_run(
                    run_id=run_id,
                    runbook=loaded.spec.id,
                    target="-",
                    mode="dry-run" if self.dry_run else "live",
                    actor="schedule",
                    params={},
                    status="queued",
                )
                try:
                    self._queue.put_nowait((run_id, loaded.spec.id, {}, "schedule", "-"))
                except queue.Full:
                    self.state.set_run(run_id, "interrupted", result="queue_full")

    # --- runs ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                run_id, runbook_id, params, actor, target = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._running.add(run_id)
            try:
                report = self.executor.run(
                    runbook_id,
                    overrides=params,
                    dry_run=self.dry_run,
                    actor=actor,
                    run_id=run_id,
                    target=target,
                    stop=self.stopping,
                )
                self.metrics.observe(report)
            except Exception as exc:
                self.audit.record("run_failed", run_id=run_id, error=self.redactor.text(f"{type(exc).__name__}: {exc}"))
                self.metrics.runs.labels(runbook=runbook_id, status="ERROR").inc()
            finally:
                self._running.discard(run_id)
