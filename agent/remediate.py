"""Safe remediation: plan -> decide (policy, pause, lock, breaker, limits, blast radius, approval)
-> apply (live only) -> verify -> escalate. Every step is audited; nothing is applied unaudited."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from agent.apply import Applier
from agent.changes import Plan
from agent.config import Settings
from agent.context import PlanContext, RunClients
from agent.exceptions import ApplyError, PlanChanged, PlanError, TargetUnreachable
from agent.loader import LoadedRunbook
from agent.models import CheckResult, RemediationDecision
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import RemediationStep
from agent.state import StateStore
from agent.status import Status
from agent.templating import TemplateError, Templates

__all__ = ["ApproveCallback", "Remediator", "RunAudit"]

# Asked for a manual remediation: True approved, False rejected, None nobody could be asked (pending).
ApproveCallback = Callable[[RemediationStep, Plan], bool | None]
CheckRunner = Callable[[list[str]], list[CheckResult]]


class RunAudit(Protocol):
    error: str | None

    def record(self, event: str, **fields: Any) -> None: ...


@dataclass
class _Run:
    """What every remediation of one run shares."""

    run_id: str
    actor: str
    audit: RunAudit
    approve: ApproveCallback
    run_checks: CheckRunner
    changed: set[str] = field(default_factory=set)  # targets changed so far (blast radius)


class Remediator:
    def __init__(
        self,
        *,
        registry: Registry,
        templates: Templates,
        settings: Settings,
        redactor: Redactor,
        policy: EnvironmentPolicy,
        state: StateStore | None,
        applier: Applier | None,
        stop: threading.Event | None = None,
    ) -> None:
        self.registry = registry
        self.templates = templates
        self.settings = settings
        self.redactor = redactor
        self.policy = policy
        self.state = state
        # None in dry-run and in plan-only environments: then nothing here can change anything.
        self.applier = applier
        # Set when the daemon is shutting down: no new remediation starts.
        self.stop = stop or threading.Event()

    def run(
        self,
        runbook: LoadedRunbook,
        params: dict[str, Any],
        decisions: list[RemediationDecision],
        *,
        run_id: str,
        actor: str,
        audit: RunAudit,
        approve: ApproveCallback,
        run_checks: CheckRunner,
    ) -> None:
        steps = {r.id: r for r in runbook.spec.remediations}
        run = _Run(run_id, actor, audit, approve, run_checks)
        clients = RunClients(self.settings)
        context = {"params": params, "env": dict(os.environ), "config": self.settings.template_view()}
        try:
            for decision in decisions:
                if decision.would_apply:
                    self._one(runbook, steps[decision.id], decision, context, clients, run)
                audit.record("remediation_decision", **self.redactor.data(decision.to_json()))
        finally:
            clients.close()

    # --- one remediation ---------------------------------------------------------------------------

    def _decide(self, decision: RemediationDecision, kind: str, reason: str) -> None:
        decision.decision, decision.decision_reason = kind, self.redactor.text(reason)

    def _plan(self, step: RemediationStep, context: dict[str, Any], clients: RunClients) -> Plan:
        spec = self.registry.remediation(step.do)
        values = self.templates.render(step.with_, context)
        params = spec.params.model_validate(values)
        changes = spec.plan(PlanContext(clients), params)
        undeclared = sorted({c.effect for c in changes} - set(spec.effects))
        if undeclared:
            raise PlanError(f"{step.do} planned undeclared effects: {', '.join(undeclared)}")
        return Plan(step.id, step.do, tuple(changes))

    def _one(
        self,
        runbook: LoadedRunbook,
        step: RemediationStep,
        decision: RemediationDecision,
        context: dict[str, Any],
        clients: RunClients,
        run: _Run,
    ) -> None:
        audit = run.audit
        try:
            plan = self._plan(step, context, clients)
        except (PlanError, TemplateError, TargetUnreachable) as exc:
            return self._decide(decision, "plan_failed", str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return self._decide(decision, "plan_failed", f"with.{where}: {first['msg']}".replace("with.:", "with:"))
        except Exception as exc:
            return self._decide(decision, "plan_failed", f"{type(exc).__name__}: {exc}")
        decision.plan = self.redactor.data(plan.to_json())
        audit.record("remediation_planned", remediation=step.id, do=step.do, plan=decision.plan)
        if not plan.changes:
            return self._decide(
                decision, "nothing_to_do", "the targets are already as the remediation would leave them"
            )
        if self.applier is None:
            why = "dry run" if self.policy.mode == "apply" else f"environment {self.policy.name}: plan only"
            return self._decide(decision, "planned_only", f"{why}: nothing changed")
        spec_id = runbook.spec.id
        if self.policy.denies(spec_id, step.id, step.do):
            return self._decide(decision, "denied", f"environment {self.policy.name} never applies {step.do}")
        assert self.state is not None  # a live applier always comes with the state store
        if self.stop.is_set():
            return self._decide(decision, "denied", "the agent is shutting down: no new remediation starts")
        paused = self.state.paused()
        if paused:
            return self._decide(decision, "denied", f"remediation is paused by {paused[1]}: {paused[0]}")
        if audit.error:
            return self._decide(decision, "denied", f"audit log unavailable, nothing is applied: {audit.error}")
        targets = plan.targets
        held = self.state.lock(targets, run.run_id, self.settings.lock_ttl)
        if held:
            return self._decide(decision, "denied", held)
        try:
            self._guarded(runbook, step, decision, plan, run)
        finally:
            self.state.unlock(targets, run.run_id)

    def _guarded(
        self,
        runbook: LoadedRunbook,
        step: RemediationStep,
        decision: RemediationDecision,
        plan: Plan,
        run: _Run,
    ) -> None:
        """Under the targets' locks: limits, approval, apply, verify. Limits are read under the lock, so two
        processes cannot both pass them."""
        assert self.state is not None and self.applier is not None
        run_id, audit = run.run_id, run.audit
        now = time.time()
        max_changes = step.limit.max if step.limit else self.settings.default_limit
        window = step.limit.per if step.limit else self.settings.limit_window
        cooldown = step.cooldown if step.cooldown is not None else self.settings.default_cooldown
        for target in plan.targets:
            breaker = self.state.breaker(target)
            if breaker:
                until = time.strftime("%H:%M:%S", time.gmtime(breaker.until))
                return self._decide(
                    decision,
                    "denied",
                    f"circuit open on {target} since run {breaker.run_id} ({breaker.reason}); until {until} UTC"
                    " or `runbook reset`",
                )
            runs = self.state.runs_on_target(target, now - window)
            if len(runs) >= max_changes:
                self._decide(decision, "denied", f"limit reached: {target} changed {len(runs)} times in {window:g}s")
                return self._escalate(decision, audit, run_id, plan, f"limit of {max_changes} per {window:g}s reached")
            last = self.state.last_action(target)
            if last is not None and now - last < cooldown:
                return self._decide(
                    decision, "denied", f"cooldown: {target} changed {now - last:.0f}s ago (cooldown {cooldown:g}s)"
                )
        new_targets = set(plan.targets) - run.changed
        if len(run.changed) + len(new_targets) > self.settings.max_targets_per_run:
            return self._decide(
                decision,
                "denied",
                f"blast radius: would change {len(run.changed) + len(new_targets)} targets in one run"
                f" (max {self.settings.max_targets_per_run})",
            )

        approval = self.policy.approval(runbook.spec.id, step.id, step.approval)
        spec = self.registry.remediation(step.do)
        if spec.manual_only:
            approval = "manual"
        if approval == "auto":
            decision.approver = f"auto ({'environment ' + self.policy.name if self.policy.auto else 'runbook'})"
        else:
            answer = run.approve(step, plan)
            if answer is None:
                assert self.state is not None
                self.state.add_pending(run_id, step.id, plan.fingerprint, self.redactor.data(plan.to_json()))
                return self._decide(
                    decision, "pending", f"waiting for a person: runbook approve {run_id} --plan {plan.fingerprint}"
                )
            if not answer:
                return self._decide(decision, "rejected", f"rejected by {run.actor}")
            decision.approver = run.actor
        audit.record("approval", remediation=step.id, approver=decision.approver, fingerprint=plan.fingerprint)
        # Fail closed: if this record cannot be written, nothing is applied.
        audit.record("apply_started", remediation=step.id, fingerprint=plan.fingerprint, targets=plan.targets)
        if audit.error:
            return self._decide(decision, "denied", f"audit log unavailable, nothing is applied: {audit.error}")
        self._decide(decision, "applied", f"approved by {decision.approver}")
        decision.applied = True
        run.changed.update(plan.targets)
        for change in plan.changes:
            try:
                result = self.applier.apply(change)
                outcome = "ok"
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, ApplyError) else str(exc)}
                outcome = "failed"
            self.state.record_action(
                run_id=run_id,
                runbook=runbook.spec.id,
                remediation=step.id,
                target=change.target,
                effect=change.effect,
                outcome=outcome,
            )
            decision.results.append(self.redactor.data({"change": change.summary, "outcome": outcome, **result}))
            if outcome == "failed":
                break
        failed = any(r["outcome"] == "failed" for r in decision.results)
        audit.record("apply_finished", remediation=step.id, results=decision.results, ok=not failed)
        if failed:
            decision.outcome = "apply_failed"
            for target in plan.targets:
                self.state.open_breaker(target, run_id, "apply failed", window)
            return self._escalate(
                decision, audit, run_id, plan, "apply failed: " + decision.results[-1].get("error", "")
            )
        if not step.verify:
            decision.outcome = "applied"
            return None
        resolved, results = self._verify(step, run.run_checks)
        decision.verify = [{"id": r.id, "status": r.status.value, "summary": r.summary} for r in results]
        decision.outcome = "resolved" if resolved else "not_resolved"
        audit.record("verify", remediation=step.id, resolved=resolved, checks=decision.verify)
        if not resolved:
            for target in plan.targets:
                self.state.open_breaker(target, run_id, "not resolved after remediation", window)
            return self._escalate(
                decision,
                audit,
                run_id,
                plan,
                "not resolved: " + "; ".join(f"{r.id} {r.status.value}" for r in results if r.status is not Status.OK),
            )
        return None

    def apply_approved(
        self,
        runbook: LoadedRunbook,
        params: dict[str, Any],
        step: RemediationStep,
        decision: RemediationDecision,
        *,
        fingerprint: str,
        run_id: str,
        approver: str,
        audit: RunAudit,
        run_checks: CheckRunner,
    ) -> None:
        """A person approved a pending plan: plan again, and go on only if the plan is still that one."""

        def approve(_: RemediationStep, plan: Plan) -> bool:
            if plan.fingerprint != fingerprint:
                raise PlanChanged(
                    f"the plan changed since it was approved (approved {fingerprint}, now {plan.fingerprint});"
                    " run the runbook again to see the new plan"
                )
            return True

        clients = RunClients(self.settings)
        context = {"params": params, "env": dict(os.environ), "config": self.settings.template_view()}
        try:
            self._one(runbook, step, decision, context, clients, _Run(run_id, approver, audit, approve, run_checks))
        finally:
            clients.close()
        audit.record("remediation_decision", **self.redactor.data(decision.to_json()))

    def _verify(self, step: RemediationStep, run_checks: CheckRunner) -> tuple[bool, list[CheckResult]]:
        """Re-run the named checks with backoff until all are OK or the deadline passes."""
        deadline = time.monotonic() + step.verify_timeout
        delay = 1.0
        while True:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            results = run_checks(step.verify)
            if all(r.status is Status.OK for r in results):
                return True, results
            if time.monotonic() >= deadline:
                return False, results
            delay = min(delay * 2, 10.0)

    def _escalate(self, decision: RemediationDecision, audit: RunAudit, run_id: str, plan: Plan, reason: str) -> None:
        decision.escalation = self.redactor.text(reason)
        audit.record("escalation", remediation=decision.id, targets=plan.targets, reason=decision.escalation)
