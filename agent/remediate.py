"""Safe remediation: plan -> guards (policy, pause, audit, lock, breaker, limits, blast radius) -> approval
-> apply (live only) -> verify -> escalate. Every step is audited; nothing is applied unaudited."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from agent.apply import Applier
from agent.changes import Change, Plan
from agent.config import Settings
from agent.context import PlanContext, RunClients
from agent.exceptions import ApplyError, PlanChanged, PlanError, TargetUnreachable
from agent.inventory import HostError, host_view, select
from agent.loader import LoadedRunbook
from agent.models import CheckResult, RemediationDecision
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import RemediationStep
from agent.silences import SilenceError, Silencer, rfc3339
from agent.state import StateStore
from agent.status import Status
from agent.templating import TemplateError, Templates

__all__ = ["ApproveCallback", "Remediator", "RunAudit"]

# Asked for a manual remediation: True approved, False rejected, None nobody could be asked (pending).
ApproveCallback = Callable[[RemediationStep, Plan], bool | None]


class CheckRunner(Protocol):
    """Runs named checks again (on the given engines only, for checks with hosts)."""

    def __call__(self, ids: list[str], hosts: list[str] | None = None, /) -> list[CheckResult]: ...


# How long a silence outlives verify_timeout when the runbook sets no silence_timeout: time for the apply
# itself. Should the agent die mid-change, the silence ends by itself then.
SILENCE_ALLOWANCE = 600.0


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
    # The run's check results, by id (`app@web-2`), as statuses: what `hosts: failing:CHECK` reads.
    statuses: Mapping[str, str] = field(default_factory=dict)
    expected: str | None = None  # an approved plan's fingerprint: a plan now empty is a changed plan

    def failing(self, check: str) -> list[str]:
        """The engines where the check found the fault (CRITICAL). Not an engine it could not reach, a
        check cut at its deadline or not run: a plan there could not be made, and would hold up the fix
        on every other engine."""
        prefix = check + "@"
        return [
            i.removeprefix(prefix)
            for i, status in self.statuses.items()
            if i.startswith(prefix) and status == "CRITICAL"
        ]


def _on_server(change: Change) -> Change:
    servers = change.spec.servers() if change.spec is not None else []
    return replace(change, summary=f"{change.summary} (on {', '.join(servers)})") if servers else change


@dataclass
class _Attempt:
    """One remediation on its way through the guards."""

    runbook: LoadedRunbook
    step: RemediationStep
    plan: Plan
    run: _Run
    locked: list[str] = field(default_factory=list)
    # Who holds the locks: this attempt, not only its run. A run's pending remediations are approved in
    # whichever process takes them (API, console, CLI), each under the run's id: two approved at once
    # must not both pass one target's lock, nor the first to finish release the lock the other relies on.
    owner: str = ""

    def __post_init__(self) -> None:
        self.owner = self.owner or f"{self.run.run_id}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Denial:
    reason: str
    escalate: str | None = None  # a limit reached is also a person's business


Guard = Callable[[_Attempt], Denial | None]


@dataclass(frozen=True)
class _Silence:
    """A silence this remediation made (id None: its create's answer was lost, so it may exist all the
    same: looked for by `marker` in its comment once the change is done)."""

    silencer: Silencer
    id: str | None
    labels: dict[str, str]
    comment: str
    marker: str


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
        context: dict[str, Any],
        statuses: Mapping[str, str] | None = None,
    ) -> None:
        steps = {r.id: r for r in runbook.spec.remediations}
        run = _Run(run_id, actor, audit, approve, run_checks, statuses=dict(statuses or {}))
        clients = RunClients(self.settings)
        try:
            for decision in decisions:
                if decision.would_apply:
                    self._one(runbook, steps[decision.id], decision, context, clients, run)
                audit.record("remediation_decision", **self.redactor.data(decision.to_json()))
        finally:
            clients.close()

    # --- the order of the safety checks -------------------------------------------------------------------

    def _guards(self) -> tuple[tuple[str, Guard], ...]:
        """Every check between a plan and a change, in order; the first to object denies the change, with
        its reason recorded. Those after `lock` run holding the targets' locks (renewed until the change
        is verified), so two processes cannot both pass them."""
        return (
            ("environment", self._environment),
            ("shutdown", self._shutdown),
            ("pause", self._pause),
            ("audit", self._audit_writable),
            ("lock", self._lock),
            ("breaker", self._breaker),
            ("rate_limit", self._rate_limit),
            ("cooldown", self._cooldown),
            ("blast_radius", self._blast_radius),
        )

    def _environment(self, a: _Attempt) -> Denial | None:
        if self.policy.denies(a.runbook.spec.id, a.step.id, a.step.do):
            return Denial(f"environment {self.policy.name} never applies {a.step.do}")
        return None

    def _shutdown(self, a: _Attempt) -> Denial | None:
        return Denial("the agent is shutting down: no new remediation starts") if self.stop.is_set() else None

    def _pause(self, a: _Attempt) -> Denial | None:
        paused = self._state.paused()
        return Denial(f"remediation is paused by {paused[1]}: {paused[0]}") if paused else None

    def _audit_writable(self, a: _Attempt) -> Denial | None:
        error = a.run.audit.error
        return Denial(f"audit log unavailable, nothing is applied: {error}") if error else None

    def _lock(self, a: _Attempt) -> Denial | None:
        held = self._state.lock(a.plan.targets, a.owner, self.settings.lock_ttl)
        if held:
            return Denial(held)
        a.locked = a.plan.targets
        return None

    def _breaker(self, a: _Attempt) -> Denial | None:
        for target in a.plan.targets:
            breaker = self._state.breaker(target)
            if breaker:
                until = time.strftime("%H:%M:%S", time.gmtime(breaker.until))
                return Denial(
                    f"circuit open on {target} since run {breaker.run_id} ({breaker.reason}); until {until} UTC"
                    " or `runbook reset`"
                )
        return None

    def _rate_limit(self, a: _Attempt) -> Denial | None:
        max_changes = a.step.limit.max if a.step.limit else self.settings.default_limit
        window = self._window(a.step)
        for target in a.plan.targets:
            runs = self._state.runs_on_target(target, time.time() - window)
            if len(runs) >= max_changes:
                return Denial(
                    f"limit reached: {target} changed {len(runs)} times in {window:g}s",
                    escalate=f"limit of {max_changes} per {window:g}s reached",
                )
        return None

    def _cooldown(self, a: _Attempt) -> Denial | None:
        cooldown = a.step.cooldown if a.step.cooldown is not None else self.settings.default_cooldown
        for target in a.plan.targets:
            last = self._state.last_action(target)
            if last is not None and time.time() - last < cooldown:
                ago = time.time() - last
                return Denial(f"cooldown: {target} changed {ago:.0f}s ago (cooldown {cooldown:g}s)")
        return None

    def _blast_radius(self, a: _Attempt) -> Denial | None:
        count = len(a.run.changed | set(a.plan.targets))
        if count > self.settings.max_targets_per_run:
            return Denial(
                f"blast radius: would change {count} targets in one run (max {self.settings.max_targets_per_run})"
            )
        return None

    # --- one remediation ---------------------------------------------------------------------------

    @property
    def _state(self) -> StateStore:
        assert self.state is not None  # a live applier always comes with the state store
        return self.state

    def _window(self, step: RemediationStep) -> float:
        return step.limit.per if step.limit else self.settings.limit_window

    def _decide(self, decision: RemediationDecision, kind: str, reason: str) -> None:
        decision.decision, decision.decision_reason = kind, self.redactor.text(reason)

    def _plan(self, step: RemediationStep, context: dict[str, Any], clients: RunClients, run: _Run) -> Plan:
        spec = self.registry.remediation(step.do)
        if step.hosts is None:
            planned = spec.plan(
                PlanContext(clients), spec.params.model_validate(self.templates.render(step.with_, context))
            )
            changes = [replace(c, host=None) if c.host is not None else c for c in planned]  # the default engine
        else:
            changes = self._plan_hosts(step, context, clients, run)
        # Which server a secret connection string reaches, without its secret, in what people read and
        # approve: a plan approved against one database or Redis is never applied to another (an
        # approver's environment pointing elsewhere, re-planned with the same queue or session name).
        changes = [_on_server(c) for c in changes]
        for change in changes:
            model = spec.effects.get(change.effect)
            if model is None:
                raise PlanError(f"{step.do} planned undeclared effects: {change.effect}")
            # What the effect will be handed is checked now, so a mismatch shows in a dry run.
            if not isinstance(change.spec, model):
                raise PlanError(
                    f"{step.do}: {change.effect} takes {model.__name__}, the plan gave {type(change.spec).__name__}"
                )
        return Plan(step.id, step.do, tuple(changes))

    def _plan_hosts(
        self, step: RemediationStep, context: dict[str, Any], clients: RunClients, run: _Run
    ) -> list[Change]:
        """Every engine's changes, planned before any is applied: one plan, one fingerprint, one approval
        for the whole rollout. Each change's target carries its engine (`container:app@web-2`), so
        locks, limits and the blast radius count per engine and across them."""
        spec = self.registry.remediation(step.do)
        engines = self.settings.engine_labels
        hosts = select(engines, step.hosts or [], templates=self.templates, context=context, failing=run.failing)
        changes: list[Change] = []
        for host in hosts:
            on_host = {**context, "host": host_view(host, engines[host])}
            params = spec.params.model_validate(self.templates.render(step.with_, on_host))
            try:
                planned = spec.plan(PlanContext(clients.on(host)), params)
            except Exception as exc:
                # A plan that cannot see every engine it names is no plan: nothing is applied anywhere.
                raise PlanError(f"{host}: {type(exc).__name__ if not str(exc) else exc}") from None
            # The engine in the target, unless it is the default engine (the same container by either
            # name must meet the same locks, limits and breakers); in the summary, for the approver.
            suffix = "" if self.settings.engine_is_default(host) else f"@{host}"
            changes.extend(
                replace(c, target=f"{c.target}{suffix}", host=host, summary=f"{host}: {c.summary}") for c in planned
            )
        return changes

    def _one(
        self,
        runbook: LoadedRunbook,
        step: RemediationStep,
        decision: RemediationDecision,
        context: dict[str, Any],
        clients: RunClients,
        run: _Run,
    ) -> None:
        try:
            plan = self._plan(step, context, clients, run)
        except (PlanError, TemplateError, TargetUnreachable, HostError) as exc:
            return self._decide(decision, "plan_failed", str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return self._decide(decision, "plan_failed", f"with.{where}: {first['msg']}".replace("with.:", "with:"))
        except Exception as exc:
            return self._decide(decision, "plan_failed", f"{type(exc).__name__}: {exc}")
        decision.plan = self.redactor.data(plan.to_json())
        run.audit.record("remediation_planned", remediation=step.id, do=step.do, plan=decision.plan)
        if not plan.changes:
            if run.expected is not None and run.expected != plan.fingerprint:
                # Approved a plan with changes: the person must see this one (approving it, in turn, is
                # "nothing to do").
                raise PlanChanged(
                    f"the plan changed since it was approved (approved {run.expected}, now nothing to do);"
                    " nothing was applied; the new plan is the one pending now"
                )
            return self._decide(
                decision, "nothing_to_do", "the targets are already as the remediation would leave them"
            )
        if self.applier is None:
            why = "dry run" if self.policy.mode == "apply" else f"environment {self.policy.name}: plan only"
            return self._decide(decision, "planned_only", f"{why}: nothing changed")
        attempt = _Attempt(runbook, step, plan, run)
        try:
            if self._denied(attempt, decision):
                return None
            if not self._approved(attempt, decision):
                return None
            # A person may have taken a while (a terminal's prompt has no timeout): the remediation may
            # have been paused meanwhile, a breaker opened, a limit or cooldown reached by another run, or
            # the locks (not renewed while a person decides) expired and taken. Every guard is passed
            # again, the locks taken again (still ours, or expired and free), before anything changes;
            # then they are kept until the change is verified.
            if self._denied(attempt, decision, since="while waiting for approval, "):
                return None
            with self._locks_kept(attempt) as lost:
                self._apply_verify(attempt, decision, lost)
        finally:
            if attempt.locked:
                self._state.unlock(attempt.locked, attempt.owner)
        return None

    def _denied(self, a: _Attempt, decision: RemediationDecision, *, since: str = "") -> bool:
        """Run the guards in order; the first to object denies the change (recorded, escalated if it says
        so). `since` prefixes the reason (what changed while a person decided)."""
        for _name, guard in self._guards():
            denial = guard(a)
            if denial is not None:
                self._decide(decision, "denied", since + denial.reason)
                if denial.escalate:
                    self._escalate(decision, a.run.audit, a.run.run_id, a.plan, denial.escalate)
                return True
        return False

    @contextmanager
    def _locks_kept(self, a: _Attempt) -> Iterator[threading.Event]:
        """Renew the targets' locks while the change is applied and verified: an apply or verify longer
        than the lock's TTL must not let another run take the targets. The event yielded is set if a
        renewal fails (the lock is no longer this run's): no further change is made."""
        done, lost = threading.Event(), threading.Event()
        every = max(0.05, self.settings.lock_ttl / 3)

        def renew() -> None:
            while not done.wait(every):
                try:
                    kept = self._state.renew(a.locked, a.owner, self.settings.lock_ttl)
                except Exception:
                    kept = False
                if not kept:
                    lost.set()
                    return

        keeper = threading.Thread(target=renew, name=f"lock-{a.run.run_id}", daemon=True)
        keeper.start()
        try:
            yield lost
        finally:
            done.set()
            keeper.join()

    def _approved(self, a: _Attempt, decision: RemediationDecision) -> bool:
        """The approval in force (policy, manual-only), asked for if a person must give it; recorded."""
        step, plan, run = a.step, a.plan, a.run
        approval = self.policy.approval(a.runbook.spec.id, step.id, step.approval)
        if self.registry.remediation(step.do).manual_only:
            approval = "manual"
        if approval == "auto":
            decision.approver = f"auto ({'environment ' + self.policy.name if self.policy.auto else 'runbook'})"
        else:
            answer = run.approve(step, plan)
            if answer is None:
                self._state.add_pending(run.run_id, step.id, plan.fingerprint, self.redactor.data(plan.to_json()))
                self._decide(
                    decision, "pending", f"waiting for a person: runbook approve {run.run_id} --plan {plan.fingerprint}"
                )
                return False
            if not answer:
                self._decide(decision, "rejected", f"rejected by {run.actor}")
                return False
            decision.approver = run.actor
        run.audit.record("approval", remediation=step.id, approver=decision.approver, fingerprint=plan.fingerprint)
        return True

    def _apply_verify(self, a: _Attempt, decision: RemediationDecision, lost: threading.Event) -> None:
        step, plan, audit = a.step, a.plan, a.run.audit
        # Fail closed: if this record cannot be written, nothing is applied.
        audit.record("apply_started", remediation=step.id, fingerprint=plan.fingerprint, targets=plan.targets)
        if audit.error:
            return self._decide(decision, "denied", f"audit log unavailable, nothing is applied: {audit.error}")
        silence = self._silence(a)
        try:
            if audit.error:  # the log broke since apply_started: fail closed, as before it
                return self._decide(decision, "denied", f"audit log unavailable, nothing is applied: {audit.error}")
            self._apply_changes(a, decision, lost)
        finally:
            if silence is not None:
                self._unsilence(a, decision, silence)
        return None

    def _apply_changes(self, a: _Attempt, decision: RemediationDecision, lost: threading.Event) -> None:
        step, plan, run, audit = a.step, a.plan, a.run, a.run.audit
        self._decide(decision, "applied", f"approved by {decision.approver}")
        decision.applied = True
        if plan.hosts:
            return self._roll_out(a, decision, lost)
        run.changed.update(plan.targets)
        ok = self._apply_each(a, decision, lost, list(plan.changes))
        audit.record("apply_finished", remediation=step.id, results=decision.results, ok=ok)
        window = self._window(step)
        if not ok:
            decision.outcome = "apply_failed"
            for target in plan.targets:
                self._state.open_breaker(target, run.run_id, "apply failed", window)
            return self._escalate(
                decision, audit, run.run_id, plan, "apply failed: " + decision.results[-1].get("error", "")
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
                self._state.open_breaker(target, run.run_id, "not resolved after remediation", window)
            return self._escalate(
                decision,
                audit,
                run.run_id,
                plan,
                "not resolved: " + "; ".join(f"{r.id} {r.status.value}" for r in results if r.status is not Status.OK),
            )
        return None

    def _apply_each(
        self, a: _Attempt, decision: RemediationDecision, lost: threading.Event, changes: list[Change]
    ) -> bool:
        """Apply changes in order, each recorded as it starts and ends; stop at the first that fails."""
        assert self.applier is not None
        for change in changes:
            shown: dict[str, Any] = {"change": change.summary, **({"host": change.host} if change.host else {})}
            if lost.is_set():
                decision.results.append({**shown, "outcome": "failed", "error": "the target's lock was lost: stopped"})
                return False
            # Each change is recorded before it is made, and not made if that fails: fail closed, as
            # apply_started does (a log that broke during the change before, a full disk, stops the rest).
            a.run.audit.record("apply_change", remediation=a.step.id, target=change.target, effect=change.effect)
            if a.run.audit.error:
                decision.results.append(
                    {**shown, "outcome": "failed", "error": "the audit log cannot be written: stopped"}
                )
                return False
            action = self._state.start_action(
                run_id=a.run.run_id,
                runbook=a.runbook.spec.id,
                remediation=a.step.id,
                target=change.target,
                effect=change.effect,
            )
            try:
                result = self.applier.apply(change)
                outcome = "ok"
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, ApplyError) else str(exc)}
                outcome = "failed"
            self._state.finish_action(action, outcome)
            decision.results.append(self.redactor.data({**shown, "outcome": outcome, **result}))
            if outcome == "failed":
                return False
        return True

    def _roll_out(self, a: _Attempt, decision: RemediationDecision, lost: threading.Event) -> None:
        """A change across engines, `rollout.batch` engines at a time: each batch applied, then verified on
        those engines, before the next is touched; stopped once more than `rollout.max_errors` engines
        failed, when the targets' lock is lost or the agent is stopping: the rest is left as it was, and
        said so (never the whole fleet at once: FBAR's lesson)."""
        step, plan, run, audit = a.step, a.plan, a.run, a.run.audit
        rollout, window = step.rollout, self._window(step)
        hosts = plan.hosts
        failed: list[str] = []
        changed: list[str] = []
        apply_failed = False
        stopped: str | None = None
        for number, start in enumerate(range(0, len(hosts), rollout.batch), start=1):
            batch = hosts[start : start + rollout.batch]
            if stopped is None and len(failed) > rollout.max_errors:
                stopped = f"rollout stopped: {', '.join(failed)} failed"
            if stopped is None and (lost.is_set() or self.stop.is_set() or audit.error):
                stopped = "rollout stopped: " + (
                    "the targets' lock was lost"
                    if lost.is_set()
                    else "the agent is stopping"
                    if self.stop.is_set()
                    else "the audit log cannot be written"
                )
            if stopped is not None:
                self._not_applied(decision, [c for c in plan.changes if c.host in batch], stopped)
                continue
            broken: list[str] = []
            for host in batch:
                changes = [c for c in plan.changes if c.host == host]
                if lost.is_set():
                    self._not_applied(decision, changes, "rollout stopped: the targets' lock was lost")
                    continue
                run.changed.update(c.target for c in changes)
                changed.append(host)
                done = len(decision.results)
                if not self._apply_each(a, decision, lost, changes):
                    broken.append(host)
                    apply_failed = True
                    tried = len(decision.results) - done
                    self._not_applied(decision, changes[tried:], f"{host}: an earlier change failed")
            healthy = [h for h in batch if h not in broken and h in changed]
            checked: list[dict[str, Any]] = []
            if step.verify and healthy:
                resolved, results = self._verify(step, run.run_checks, healthy)
                checked = [{"id": r.id, "status": r.status.value, "summary": r.summary} for r in results]
                decision.verify = checked
                broken += [h for h in healthy if not _verified_on(h, results)]
            for host in broken:
                for change in (c for c in plan.changes if c.host == host):
                    self._state.open_breaker(change.target, run.run_id, "rollout step failed", window)
            failed += broken
            audit.record("rollout_step", remediation=step.id, step=number, hosts=batch, failed=broken, verify=checked)
        complete = not failed and stopped is None
        audit.record("apply_finished", remediation=step.id, results=decision.results, ok=complete)
        if complete and step.verify:
            # Every engine changed, verified together once all are done (not the engines left alone).
            resolved, results = self._verify(step, run.run_checks, changed)
            decision.verify = [{"id": r.id, "status": r.status.value, "summary": r.summary} for r in results]
            audit.record("verify", remediation=step.id, resolved=resolved, checks=decision.verify)
            if not resolved:
                failed = [h for h in changed if not _verified_on(h, results)] or changed
                for change in (c for c in plan.changes if c.host in failed):
                    self._state.open_breaker(change.target, run.run_id, "not resolved after remediation", window)
                complete = False
        if complete:
            decision.outcome = "resolved" if step.verify else "applied"
            return None
        decision.outcome = "apply_failed" if apply_failed else "not_resolved"
        left = [h for h in hosts if h not in changed]
        why = (stopped or "rollout finished") + (f"; failed on {', '.join(failed)}" if failed else "")
        return self._escalate(
            decision, audit, run.run_id, plan, why + (f"; not changed: {', '.join(left)}" if left else "")
        )

    @staticmethod
    def _not_applied(decision: RemediationDecision, changes: list[Change], why: str) -> None:
        for change in changes:
            decision.results.append(
                {"change": change.summary, "host": change.host, "outcome": "not_applied", "error": why}
            )

    # --- Alertmanager silences --------------------------------------------------------------------------

    def _silence(self, a: _Attempt) -> _Silence | None:
        """With `silence: true`, silence the alert that started the run while its change is applied and
        verified: the people it would page hear from the escalation instead, if the fix fails. Only an
        alert Alertmanager has now, and only if a silence of its labels would mute nothing else. A silence
        that cannot be made is recorded and the change goes on: the fix matters more than the quiet."""
        step, run = a.step, a.run
        if not step.silence:
            return None
        # A little in the past: an agent's clock ahead of Alertmanager's would make it a pending silence,
        # muting nothing (Alertmanager moves a start in the past to its own now).
        starts = time.time() - 60
        ends = time.time() + (step.silence_timeout or step.verify_timeout + SILENCE_ALLOWANCE)
        marker = f"run {run.run_id}: remediation {step.id} is"
        comment = (
            f"runbook {a.runbook.spec.id}, {marker} being applied and verified;"
            " expired when it fails, soon after it is verified"
        )
        silencer: Silencer | None = None
        sent = False
        try:
            found = self._silence_target(run.run_id)
            if isinstance(found, str):
                run.audit.record("silence_skipped", remediation=step.id, reason=found)
                return None
            url, labels = found
            silencer = Silencer(
                url,
                connect_timeout=self.settings.connect_timeout,
                timeout=self.settings.read_timeout,
                created_by=f"runbook@{socket.gethostname()}",
            )
            same, others = silencer.others(labels)
            if not same or others:
                why = (
                    "Alertmanager has no such alert now"
                    if not same
                    else f"a silence of its labels would also mute {others} other alert(s)"
                )
                run.audit.record("silence_skipped", remediation=step.id, reason=why)
                return None
            # Recorded before it is made, like every change: if this cannot be recorded, none is made.
            run.audit.record(
                "silence_requested",
                remediation=step.id,
                alertmanager=self.redactor.text(silencer.where),
                matchers=self.redactor.data(labels),
                ends_at=rfc3339(ends),
            )
            if run.audit.error:
                return None
            sent = True
            silence_id = silencer.create(labels, starts=starts, ends=ends, comment=comment)
        except Exception as exc:  # any failure (a bad answer, a bug) is the silence's, never the fix's
            error = str(exc) if isinstance(exc, SilenceError) else f"{type(exc).__name__}: {exc}"
            run.audit.record("silence_failed", remediation=step.id, error=self.redactor.text(error))
            # A create whose answer was lost may have made one all the same: looked for after the fix.
            return _Silence(silencer, None, labels, comment, marker) if sent and silencer is not None else None
        run.audit.record("silence_created", remediation=step.id, silence_id=silence_id, ends_at=rfc3339(ends))
        return _Silence(silencer, silence_id, labels, comment, marker)

    def _silence_target(self, run_id: str) -> tuple[str, dict[str, str]] | str:
        """The Alertmanager and the labels of the alert that started the run, or why there are none."""
        url = self.settings.alertmanager_url
        if url is None:
            return "no alertmanager_url in the config"
        alert = self._state.run_alert(run_id)
        if alert is None:
            return "the run was not started by an alert, or the alert's record is past its retention"
        if alert["source"] != "alertmanager":
            return f"the run's alert came from {alert['source']}, not from Alertmanager"
        return url, alert["labels"]

    def _unsilence(self, a: _Attempt, decision: RemediationDecision, silence: _Silence) -> None:
        """Verified: the silence ends `silence_grace` from now (Prometheus must evaluate the rule again to
        resolve the alert; a silence gone before that would let the stale alert page). Anything else, at
        once: if the alert still fires, people hear it."""
        step, audit = a.step, a.run.audit
        silencer = silence.silencer

        def failed(silence_id: str | None, exc: Exception) -> None:
            error = str(exc) if isinstance(exc, SilenceError) else f"{type(exc).__name__}: {exc}"
            audit.record(
                "silence_expire_failed", remediation=step.id, silence_id=silence_id, error=self.redactor.text(error)
            )

        if silence.id is None:  # its create's answer was lost: expire whatever it made
            try:
                orphans = silencer.ours(silence.labels, silence.marker)
            except Exception as exc:
                return failed(None, exc)
            for orphan in orphans:
                try:
                    silencer.expire(orphan)
                    audit.record("silence_expired", remediation=step.id, silence_id=orphan, outcome=decision.outcome)
                except Exception as exc:
                    failed(orphan, exc)
            return None
        if decision.outcome == "resolved" and step.silence_grace > 0:
            ends = time.time() + step.silence_grace
            try:
                now_id = silencer.end_at(silence.id, silence.labels, ends=ends, comment=silence.comment)
            except Exception as exc:  # then at once rather than at its timeout
                failed(silence.id, exc)
            else:
                if now_id is None:
                    audit.record(
                        "silence_expired",
                        remediation=step.id,
                        silence_id=silence.id,
                        outcome=decision.outcome,
                        note="it had ended before the fix was verified (by a person, or at silence_timeout)",
                    )
                else:
                    audit.record(
                        "silence_ends",
                        remediation=step.id,
                        silence_id=now_id,
                        replaced=silence.id if now_id != silence.id else None,
                        ends_at=rfc3339(ends),
                        outcome="resolved",
                    )
                return None
        try:
            silencer.expire(silence.id)
        except Exception as exc:
            return failed(silence.id, exc)
        audit.record("silence_expired", remediation=step.id, silence_id=silence.id, outcome=decision.outcome)
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
        context: dict[str, Any],
        statuses: Mapping[str, str] | None = None,
    ) -> None:
        """A person approved a pending plan: plan again, and go on only if the plan is still that one."""

        def approve(_: RemediationStep, plan: Plan) -> bool:
            if plan.fingerprint != fingerprint:
                raise PlanChanged(
                    f"the plan changed since it was approved (approved {fingerprint}, now {plan.fingerprint}):"
                    " nothing was applied; the new plan is the one pending now (runbook runs show / the console)"
                )
            return True

        clients = RunClients(self.settings)
        try:
            run = _Run(
                run_id, approver, audit, approve, run_checks, statuses=dict(statuses or {}), expected=fingerprint
            )
            # The run's blast radius counts what it changed before this approval (its other remediations).
            run.changed.update(self._state.targets_changed_by(run_id))
            self._one(runbook, step, decision, context, clients, run)
        finally:
            clients.close()
        audit.record("remediation_decision", **self.redactor.data(decision.to_json()))

    def _verify(
        self, step: RemediationStep, run_checks: CheckRunner, hosts: list[str] | None = None
    ) -> tuple[bool, list[CheckResult]]:
        """Re-run the named checks (on `hosts` only, for checks with hosts) with backoff until all are OK
        or the deadline passes."""
        deadline = time.monotonic() + step.verify_timeout
        delay = 1.0
        while True:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            results = run_checks(step.verify, hosts)
            if all(r.status is Status.OK for r in results):
                return True, results
            if time.monotonic() >= deadline:
                return False, results
            delay = min(delay * 2, 10.0)

    def _escalate(self, decision: RemediationDecision, audit: RunAudit, run_id: str, plan: Plan, reason: str) -> None:
        decision.escalation = self.redactor.text(reason)
        audit.record("escalation", remediation=decision.id, targets=plan.targets, reason=decision.escalation)


def _verified_on(host: str, results: list[CheckResult]) -> bool:
    """Whether the verification holds for one engine: its own results all OK, and at least one of them
    (a check whose hosts leave that engine out verifies nothing there). A failing check without hosts
    fails every engine of the batch."""
    mine = [r for r in results if r.id.endswith("@" + host)]
    shared = [r for r in results if "@" not in r.id]
    if not mine and not shared:
        return False
    return all(r.status is Status.OK for r in [*mine, *shared])
