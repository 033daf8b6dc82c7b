"""Runs a runbook: resolves params, runs checks concurrently with timeouts, decides remediations, audits."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agent.apply import DEFAULT_EFFECT_MODULES, Applier
from agent.audit import AuditLog
from agent.config import Settings
from agent.context import CheckContext, RunClients
from agent.exceptions import AuditError, NotFound, PlanChanged, RunbookError, TargetUnreachable
from agent.loader import LoadedRunbook, RunbookSet
from agent.models import CheckResult, RemediationDecision, RunReport
from agent.plugins import Outcome
from agent.policy import EnvironmentPolicy
from agent.redaction import MASK, Redactor
from agent.remediate import ApproveCallback, Remediator
from agent.schema import CheckStep
from agent.state import StateStore
from agent.status import Status, worst
from agent.templating import TemplateError

__all__ = ["Executor", "ParamError"]

ProgressCallback = Callable[[str, CheckResult | None], None]


class ParamError(RunbookError):
    code = "bad_param"


class _Audit:
    """The run's audit trail. A failed write is kept as `error` (nothing may be applied after it)
    instead of aborting the diagnosis an engineer is waiting for."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.error: str | None = None

    def record(self, event: str, **fields: Any) -> None:
        if self.error:
            return
        try:
            self.log.record(event, **fields)
        except AuditError as exc:
            self.error = exc.message


class Executor:
    def __init__(
        self,
        runbooks: RunbookSet,
        settings: Settings,
        redactor: Redactor,
        audit: AuditLog,
        *,
        policy: EnvironmentPolicy | None = None,
        state: StateStore | None = None,
        effect_modules: Mapping[str, str] = DEFAULT_EFFECT_MODULES,
    ) -> None:
        self.runbooks = runbooks
        self.settings = settings
        self.redactor = redactor
        self.audit = audit
        self.policy = policy or EnvironmentPolicy()
        self.state = state
        self.effect_modules = effect_modules
        self.templates = runbooks.templates
        self.registry = runbooks.registry

    def resolve_params(self, runbook: LoadedRunbook, overrides: Mapping[str, str]) -> dict[str, Any]:
        spec = runbook.spec
        unknown = sorted(set(overrides) - set(spec.params))
        if unknown:
            known = ", ".join(spec.params) or "none"
            raise ParamError(f"{spec.id}: unknown param {', '.join(unknown)} (known: {known})")
        context = {"env": dict(os.environ), "config": self.settings.template_view()}
        params: dict[str, Any] = {}
        for name, param in spec.params.items():
            if name in overrides:
                params[name] = overrides[name]
            else:
                try:
                    params[name] = self.templates.render(param.default, context)
                except TemplateError as exc:
                    raise ParamError(f"{runbook.path}: params.{name}: {exc}") from None
            if param.secret and isinstance(params[name], str):
                self.redactor.add(params[name])
        return params

    def run(
        self,
        runbook_id: str,
        *,
        overrides: Mapping[str, str] | None = None,
        dry_run: bool = False,
        actor: str,
        progress: ProgressCallback | None = None,
        approve: ApproveCallback | None = None,
        run_id: str | None = None,
        target: str = "-",
        stop: threading.Event | None = None,
    ) -> RunReport:
        """Run a runbook. With a state store the run is recorded there (status, then its report), so
        `runbook runs`, the daemon's API and approvals of pending remediations can find it."""
        runbook = self.runbooks.runbooks[runbook_id]
        spec = runbook.spec
        params = self.resolve_params(runbook, overrides or {})
        run_id = run_id or uuid.uuid4().hex[:12]
        if self.state is not None:
            if self.state.run(run_id) is None:
                self.state.add_run(
                    run_id=run_id,
                    runbook=spec.id,
                    target=target,
                    mode="dry-run" if dry_run else "live",
                    actor=actor,
                    params=dict(overrides or {}),
                )
            else:
                self.state.set_run(run_id, "running")
        try:
            report = self._run(
                runbook, params, run_id, dry_run=dry_run, actor=actor, progress=progress, approve=approve, stop=stop
            )
        except BaseException:
            if self.state is not None:
                self.state.set_run(run_id, "interrupted", result="error")
            raise
        if self.state is not None:
            self.state.set_run(
                run_id, "finished", result=report.exit_status.value, report=self.redactor.data(report.to_json())
            )
        return report

    def _run(
        self,
        runbook: LoadedRunbook,
        params: dict[str, Any],
        run_id: str,
        *,
        dry_run: bool,
        actor: str,
        progress: ProgressCallback | None,
        approve: ApproveCallback | None,
        stop: threading.Event | None,
    ) -> RunReport:
        spec = runbook.spec
        shown_params = {k: (MASK if spec.params[k].secret else self.redactor.data(v)) for k, v in params.items()}
        report = RunReport(
            run_id=run_id,
            runbook=spec.id,
            title=spec.title,
            severity=spec.severity,
            mode="dry-run" if dry_run else "live",
            actor=actor,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            params=shown_params,
            advice=list(spec.advice),
        )
        audit = _Audit(self.audit.bind(run_id=report.run_id, actor=actor, mode=report.mode, runbook=spec.id))
        audit.record("run_started", severity=spec.severity, params=shown_params)
        start = time.monotonic()
        clients = RunClients(self.settings)
        try:
            report.checks = self._run_checks(spec.checks, params, clients, audit, progress)
        finally:
            clients.close()
        report.status = worst(c.status for c in report.checks)
        report.remediations = self._decide(runbook, params, report)
        self._remediate(runbook, params, report, audit, dry_run=dry_run, actor=actor, approve=approve, stop=stop)
        if any(r.applied for r in report.remediations):
            # The state the run leaves behind: every check once more, after the changes.
            final = self._run_checks(spec.checks, params, RunClients(self.settings), audit, None, phase="final")
            report.final_checks = final
            report.final_status = worst(c.status for c in final)
        report.duration_ms = (time.monotonic() - start) * 1000
        audit.record(
            "run_finished",
            status=report.status.value,
            final_status=report.final_status.value if report.final_status else None,
            escalations=report.escalations,
            duration_ms=round(report.duration_ms, 1),
        )
        report.audit_error = audit.error
        return report

    # --- checks -------------------------------------------------------------------------------

    def _run_checks(
        self,
        steps: list[CheckStep],
        params: dict[str, Any],
        clients: RunClients,
        audit: _Audit,
        progress: ProgressCallback | None,
        phase: str = "diagnose",
    ) -> list[CheckResult]:
        context = {"params": params, "env": dict(os.environ), "config": self.settings.template_view()}
        results: dict[str, CheckResult] = {}
        waiting = list(steps)
        running: dict[Future[CheckResult], tuple[CheckStep, float]] = {}
        pool = ThreadPoolExecutor(max_workers=self.settings.max_parallel_checks, thread_name_prefix="check")

        def finish(result: CheckResult) -> None:
            results[result.id] = result
            audit.record("check_result", phase=phase, **self.redactor.data(result.to_json()))
            if progress:
                progress(result.id, result)

        # A subset (verify) runs without the checks it would otherwise wait for.
        ids = {step.id for step in steps}
        needs = {step.id: [n for n in step.needs if n in ids] for step in steps}
        try:
            while waiting or running:
                for step in list(waiting):
                    if any(need not in results for need in needs[step.id]):
                        continue
                    waiting.remove(step)
                    failed = [n for n in needs[step.id] if results[n].status not in (Status.OK, Status.WARNING)]
                    if failed:
                        finish(self._skipped(step, failed, results))
                        continue
                    if progress:
                        progress(step.id, None)
                    future = pool.submit(self._run_one, step, context, clients)
                    running[future] = (step, time.monotonic() + step.timeout)
                if not running:
                    continue
                next_deadline = min(deadline for _, deadline in running.values())
                done, _ = wait(running, timeout=max(0.0, next_deadline - time.monotonic()), return_when=FIRST_COMPLETED)
                now = time.monotonic()
                for future in list(running):
                    step, deadline = running[future]
                    if future in done:
                        del running[future]
                        finish(future.result())
                    elif now >= deadline:
                        # The thread cannot be killed; its client timeouts end it soon. The run moves on.
                        del running[future]
                        finish(
                            CheckResult(
                                step.id,
                                step.check,
                                Status.CRITICAL,
                                f"timed out after {step.timeout:g}s",
                                step.timeout * 1000,
                                code="timeout",
                            )
                        )
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if phase != "diagnose":
                clients.close()
        return [results[step.id] for step in steps]

    def _skipped(self, step: CheckStep, failed: list[str], results: dict[str, CheckResult]) -> CheckResult:
        why = ", ".join(f"{n} is {results[n].status.value}" for n in failed)
        return CheckResult(step.id, step.check, Status.UNKNOWN, f"not run: {why}", 0.0, code="dependency_failed")

    def _run_one(self, step: CheckStep, context: dict[str, Any], clients: RunClients) -> CheckResult:
        start = time.monotonic()

        def result(outcome: Outcome) -> CheckResult:
            return CheckResult(
                id=step.id,
                check=step.check,
                status=outcome.status,
                summary=self.redactor.text(outcome.summary),
                duration_ms=(time.monotonic() - start) * 1000,
                details=self.redactor.data(outcome.details),
                metrics=dict(outcome.metrics),
                code=outcome.code,
            )

        try:
            plugin = self.registry.check(step.check)
            values = self.templates.render(step.with_, context)
            params = plugin.params.model_validate(values)
            outcome = plugin.func(CheckContext(clients, step.timeout), params)
        except TemplateError as exc:
            outcome = Outcome(Status.UNKNOWN, str(exc), code="template_error")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            outcome = Outcome(Status.UNKNOWN, f"bad parameter with.{where}: {first['msg']}", code="bad_params")
        except TargetUnreachable as exc:
            outcome = Outcome(Status.CRITICAL, exc.message, code=exc.code)
        except (TimeoutError, ConnectionError) as exc:
            outcome = Outcome(Status.CRITICAL, f"target unreachable: {exc}", code="unreachable")
        except Exception as exc:
            # A bug or bad data in a check is a result, never an aborted run.
            outcome = Outcome(Status.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}", code="check_error")
        return result(outcome)

    # --- remediations ----------------------------------------------------------------------------

    def _decide(self, runbook: LoadedRunbook, params: dict[str, Any], report: RunReport) -> list[RemediationDecision]:
        """Which remediations the check results call for, and why (their `when:`)."""
        views = {c.id: c.view() for c in report.checks}
        decisions = []
        for rem in runbook.spec.remediations:
            if rem.when is None:
                # No condition: it is for when something is wrong, never for a healthy run.
                applies = report.status is not Status.OK
                reason = f"overall status is {report.status.value}"
            else:
                try:
                    applies = bool(self.templates.evaluate(rem.when, {"checks": views, "params": params}))
                    reason = f"when: {rem.when.strip()} -> {str(applies).lower()}"
                except TemplateError as exc:
                    applies, reason = False, f"when could not be evaluated: {exc}"
            decisions.append(RemediationDecision(rem.id, rem.do, rem.approval, applies, self.redactor.text(reason)))
        return decisions

    def _remediate(
        self,
        runbook: LoadedRunbook,
        params: dict[str, Any],
        report: RunReport,
        audit: _Audit,
        *,
        dry_run: bool,
        actor: str,
        approve: ApproveCallback | None,
        stop: threading.Event | None,
    ) -> None:
        live = not dry_run and self.policy.mode == "apply" and any(d.would_apply for d in report.remediations)
        if live and self.state is None:
            raise RunbookError("remediation needs the state store (limits and locks); none was given")
        # In dry-run or a plan-only environment no applier exists: nothing below can change anything.
        applier = Applier(self.settings, self.effect_modules) if live else None
        remediator = self._remediator(applier, stop)
        verify_checks = self._verifier(runbook, params, audit)
        try:
            remediator.run(
                runbook,
                params,
                report.remediations,
                run_id=report.run_id,
                actor=actor,
                audit=audit,
                approve=approve or (lambda step, plan: None),
                run_checks=verify_checks,
            )
        finally:
            if applier is not None:
                applier.close()

    # --- pending approvals ------------------------------------------------------------------------

    def decide_pending(
        self,
        run_id: str,
        *,
        approve: bool,
        approver: str,
        remediation: str | None = None,
        fingerprint: str | None = None,
        reason: str = "",
    ) -> RemediationDecision:
        """A person's answer to a pending manual remediation. Approving plans again and applies only if
        the plan is the one approved (PlanChanged otherwise); either answer is given once only."""
        if self.state is None:
            raise RunbookError("approvals need the state store")
        run = self.state.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        pending = [p for p in self.state.pending(run_id) if remediation in (None, p[1])]
        if len(pending) != 1:
            what = f"remediation {remediation!r} of run {run_id}" if remediation else f"run {run_id}"
            names = ", ".join(p[1] for p in self.state.pending(run_id)) or "none"
            raise NotFound(f"no single pending approval for {what} (pending: {names})")
        _, rem_id, pending_fp, _ = pending[0]
        if fingerprint is not None and fingerprint != pending_fp:
            raise PlanChanged(f"approval names plan {fingerprint}, but the pending plan is {pending_fp}")
        runbook = self.runbooks.runbooks.get(run["runbook"])
        if runbook is None:
            raise NotFound(f"runbook {run['runbook']!r} of run {run_id} is not loaded")
        step = next(r for r in runbook.spec.remediations if r.id == rem_id)
        audit = _Audit(self.audit.bind(run_id=run_id, actor=approver, mode="live", runbook=runbook.spec.id))
        decision = RemediationDecision(step.id, step.do, step.approval, True, f"pending since run {run_id}")
        if not approve:
            if not self.state.take_pending(run_id, rem_id):
                raise NotFound(f"remediation {rem_id} of run {run_id} was already decided")
            decision.decision, decision.decision_reason = "rejected", f"rejected by {approver}: {reason}".rstrip(": ")
            audit.record("remediation_decision", **self.redactor.data(decision.to_json()))
            self._store_decision(run_id, decision)
            return decision
        params = self.resolve_params(runbook, run["params"])
        verify_checks = self._verifier(runbook, params, audit)
        applier = Applier(self.settings, self.effect_modules) if self.policy.mode == "apply" else None
        remediator = self._remediator(applier, None)
        try:
            if not self.state.take_pending(run_id, rem_id):
                raise NotFound(f"remediation {rem_id} of run {run_id} was already decided")
            try:
                remediator.apply_approved(
                    runbook,
                    params,
                    step,
                    decision,
                    fingerprint=pending_fp,
                    run_id=run_id,
                    approver=approver,
                    audit=audit,
                    run_checks=verify_checks,
                )
            except PlanChanged:
                # Still waiting for a person, who must now look at the new plan.
                self.state.add_pending(run_id, rem_id, pending_fp, decision.plan or {})
                raise
        finally:
            if applier is not None:
                applier.close()
        self._store_decision(run_id, decision)
        return decision

    def _remediator(self, applier: Applier | None, stop: threading.Event | None) -> Remediator:
        return Remediator(
            registry=self.registry,
            templates=self.templates,
            settings=self.settings,
            redactor=self.redactor,
            policy=self.policy,
            state=self.state,
            applier=applier,
            stop=stop,
        )

    def _verifier(
        self, runbook: LoadedRunbook, params: dict[str, Any], audit: _Audit
    ) -> Callable[[list[str]], list[CheckResult]]:
        """Runs named checks again, each time with fresh clients (the target may have been replaced)."""
        by_id = {s.id: s for s in runbook.spec.checks}

        def verify_checks(ids: list[str]) -> list[CheckResult]:
            return self._run_checks([by_id[i] for i in ids], params, RunClients(self.settings), audit, None, "verify")

        return verify_checks

    def _store_decision(self, run_id: str, decision: RemediationDecision) -> None:
        assert self.state is not None
        run = self.state.run(run_id)
        report = (run or {}).get("report") or {}
        report["remediations"] = [
            decision.to_json() if r.get("id") == decision.id else r for r in report.get("remediations", [])
        ]
        self.state.set_run(run_id, (run or {}).get("status", "finished"), report=self.redactor.data(report))
