"""Runs a runbook: resolves params, runs checks concurrently with timeouts, decides remediations, audits."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from agent.apply import Applier
from agent.audit import AuditLog, timestamp
from agent.config import Settings
from agent.context import CheckContext, RunClients
from agent.exceptions import AuditError, Conflict, NotFound, PlanChanged, RunbookError, TargetUnreachable
from agent.inventory import HostError, host_view, select
from agent.loader import LoadedRunbook, RunbookSet
from agent.models import CheckResult, RemediationDecision, RunReport
from agent.plugins import Outcome
from agent.policy import EnvironmentPolicy
from agent.redaction import MASK, Redactor
from agent.remediate import ApproveCallback, CheckRunner, Remediator
from agent.schema import CheckStep
from agent.state import StateStore
from agent.status import Status, worst
from agent.templating import TemplateError

__all__ = ["Executor", "ParamError", "ResolvedParams"]

ProgressCallback = Callable[[str, CheckResult | None], None]
T = TypeVar("T")


class ParamError(RunbookError):
    code = "bad_param"


@dataclass(frozen=True)
class ResolvedParams:
    """A run's params, and what of them may be stored: overrides in clear except secret ones, which are
    named only (an approval of the run must be given them again)."""

    values: dict[str, Any]
    stored: dict[str, str]
    secret_overrides: list[str]


@dataclass(frozen=True)
class _Instance:
    """One check of a run on one engine: a step without `hosts` is one instance on the default engine;
    with them, one per engine, its result named `id@host`. `error`: its hosts could not be resolved."""

    step: CheckStep
    host: str | None
    id: str
    error: str | None = None


class _Worker:
    """A check thread that, between checks, waits a while for the next one: starting a thread for every
    check of every run cost a warm daemon more than some of the checks."""

    def __init__(self, pool: _CheckThreads) -> None:
        self._pool = pool
        self._ready = threading.Event()
        self._job: tuple[Callable[[], None], str] | None = None

    def give(self, job: Callable[[], None], name: str) -> None:
        self._job = (job, name)
        self._ready.set()

    def run(self) -> None:
        me = threading.current_thread()
        while True:
            if not self._ready.wait(self._pool.idle_for):
                if self._pool.retire(self):
                    return
                self._ready.wait()  # taken just now by `start`: its job is on the way
            self._ready.clear()
            assert self._job is not None
            job, me.name = self._job
            self._job = None
            job()
            me.name = "spare-thread"  # (not "check-...": no check is running on it)
            self._pool.idle(self)


class _CheckThreads:
    """Checks run on daemon threads, kept a while for the next checks. One past its deadline is
    abandoned: its clients' watchdogs end it soon, and it never keeps the process from exiting. Threads
    abandoned but still alive are bounded process-wide, so a target that never answers cannot pile up
    threads run after run: past the bound, checks are reported as not started. (Threads within their
    deadline are bounded by the runs at once times max_parallel_checks.)"""

    limit = 32
    idle_for = 30.0  # seconds an idle thread waits for another check before it ends

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stuck: set[Future[Any]] = set()
        self._idle: list[_Worker] = []

    def start(self, func: Callable[[], T], name: str) -> Future[T] | None:
        """Run `func` on a thread of its own (an idle one or a new one); None while too many are stuck
        past their deadline."""
        with self._lock:
            if len(self._stuck) >= self.limit:
                return None
            worker = self._idle.pop() if self._idle else None
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(func())
            except BaseException as exc:  # a check's result is always a result; this is a bug
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._stuck.discard(future)

        if worker is None:
            worker = _Worker(self)
            threading.Thread(target=worker.run, name=name, daemon=True).start()
        worker.give(run, name)
        return future

    def idle(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """Whether an idle `worker` may end (False: `start` has just taken it)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def abandon(self, future: Future[Any]) -> None:
        with self._lock:
            if not future.done():
                self._stuck.add(future)

    @property
    def stuck(self) -> int:
        with self._lock:
            return len(self._stuck)


_THREADS = _CheckThreads()


class _Audit:
    """The run's audit trail. A failed write is kept as `error` (nothing may be applied after it)
    instead of aborting the diagnosis an engineer is waiting for."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.error: str | None = None
        self._lock = threading.Lock()
        self._held: list[tuple[str, dict[str, Any]]] | None = None

    def record(self, event: str, **fields: Any) -> None:
        if self.error:
            return
        with self._lock:
            if self._held is not None:
                self._held.append((event, {**fields, "ts": timestamp()}))
                return
        self._write([(event, fields)])

    def _write(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            self.log.record_many(events)
        except AuditError as exc:
            self.error = exc.message

    @contextmanager
    def held(self) -> Iterator[None]:
        """A diagnosis's records, each stamped when made, written together when it ends (one fsync, not
        one per check): nothing is decided or applied before they are written, and a run cut short
        before then is marked interrupted without having acted."""
        with self._lock:
            self._held = []
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
            if held:
                self._write(held)


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
        effect_modules: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.runbooks = runbooks
        self.settings = settings
        self.redactor = redactor
        self.audit = audit
        self.policy = policy or EnvironmentPolicy()
        self.state = state
        # Dry run is a property of the process: a dry-run executor has no effects to load, so no path
        # through it (a run, an approval, a scheduled sweep) can build an applier.
        self.dry_run = dry_run
        self._can_apply = not dry_run
        self._effect_modules = effect_modules  # None: the installed families' (agent.apply)
        self.close_later = False  # the daemon sets it (see _close)
        self.templates = runbooks.templates
        self.registry = runbooks.registry
        # Templates see only the environment variables the settings allow, never the agent's own secrets.
        self._env = {name: os.environ[name] for name in settings.template_env if name in os.environ}

    def _context(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        context: dict[str, Any] = {"env": self._env, "config": self.settings.template_view()}
        if params is not None:
            context["params"] = params
        return context

    def _applier(self) -> Applier | None:
        if not self._can_apply or self.policy.mode != "apply":
            return None
        return Applier(self.settings, self._effect_modules)

    def resolve_params(self, runbook: LoadedRunbook, overrides: Mapping[str, str]) -> ResolvedParams:
        spec = runbook.spec
        unknown = sorted(set(overrides) - set(spec.params))
        if unknown:
            known = ", ".join(spec.params) or "none"
            raise ParamError(f"{spec.id}: unknown param {', '.join(unknown)} (known: {known})")
        context = self._context()
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
        secret = sorted(n for n in overrides if spec.params[n].secret)
        stored = {k: str(v) for k, v in overrides.items() if k not in secret}
        return ResolvedParams(params, stored, secret)

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
        resolved = self.resolve_params(runbook, overrides or {})
        dry_run = dry_run or self.dry_run
        run_id = run_id or uuid.uuid4().hex[:12]
        if self.state is not None:
            if self.state.run(run_id) is None:
                self.state.add_run(
                    run_id=run_id,
                    runbook=spec.id,
                    target=target,
                    mode="dry-run" if dry_run else "live",
                    actor=actor,
                    params=resolved.stored,
                    secret_params=resolved.secret_overrides,
                )
            elif not self.state.begin_run(run_id):
                # Another agent took it from the shared queue (or it ended): it runs there, never here too.
                raise Conflict(f"run {run_id} is not this agent's to begin (taken by another, or ended)")
        try:
            report = self._run(
                runbook,
                resolved.values,
                run_id,
                dry_run=dry_run,
                actor=actor,
                progress=progress,
                approve=approve,
                stop=stop,
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
        start = time.monotonic()
        clients = RunClients(self.settings)
        acting = False
        try:
            with audit.held():
                audit.record("run_started", severity=spec.severity, params=shown_params)
                report.checks = self._run_checks(spec.checks, params, clients, audit, progress)
                report.status = worst(c.status for c in report.checks)
                report.remediations = self._decide(runbook, params, report)
                acting = any(d.would_apply for d in report.remediations)
                if not acting:
                    # Nothing can act: the decisions and the end of the run are written with the
                    # diagnosis, in one flush.
                    self._remediate(
                        runbook, params, report, audit, dry_run=dry_run, actor=actor, approve=approve, stop=stop
                    )
                    self._finished(report, audit, start)
        finally:
            self._close(clients)
        if acting:
            # Every record so far is durable before anything below is tried.
            self._remediate(runbook, params, report, audit, dry_run=dry_run, actor=actor, approve=approve, stop=stop)
            if any(r.applied for r in report.remediations):
                # The state the run leaves behind: every check once more, after the changes.
                final = self._run_checks(spec.checks, params, RunClients(self.settings), audit, None, phase="final")
                report.final_checks = final
                report.final_status = worst(c.status for c in final)
            self._finished(report, audit, start)
        report.audit_error = audit.error
        return report

    @staticmethod
    def _finished(report: RunReport, audit: _Audit, start: float) -> None:
        report.duration_ms = (time.monotonic() - start) * 1000
        audit.record(
            "run_finished",
            status=report.status.value,
            final_status=report.final_status.value if report.final_status else None,
            escalations=report.escalations,
            duration_ms=round(report.duration_ms, 1),
        )

    def _close(self, clients: RunClients) -> None:
        """A long-lived process closes a diagnosis's connections on a spare thread, after the verdict;
        one about to exit closes them now (a database logs a connection dropped unclosed)."""
        if not self.close_later or _THREADS.start(clients.close, "close-clients") is None:
            clients.close()

    # --- checks -------------------------------------------------------------------------------

    def _instances(self, steps: list[CheckStep], context: dict[str, Any], hosts: list[str] | None) -> list[_Instance]:
        """The checks to run, one per step and engine; `hosts` keeps only those engines' instances of the
        steps that have hosts (a verification on the hosts a rollout just changed)."""
        out: list[_Instance] = []
        for step in steps:
            if step.hosts is None:
                out.append(_Instance(step, None, step.id))
                continue
            try:
                names = select(self.settings.engine_labels, step.hosts, templates=self.templates, context=context)
            except HostError as exc:
                out.append(_Instance(step, None, step.id, str(exc)))
                continue
            out.extend(_Instance(step, h, f"{step.id}@{h}") for h in names if hosts is None or h in hosts)
        return out

    def _run_checks(
        self,
        steps: list[CheckStep],
        params: dict[str, Any],
        clients: RunClients,
        audit: _Audit,
        progress: ProgressCallback | None,
        phase: str = "diagnose",
        hosts: list[str] | None = None,
    ) -> list[CheckResult]:
        context = self._context(params)
        instances = self._instances(steps, context, hosts)
        results: dict[str, CheckResult] = {}
        waiting = list(instances)
        running: dict[Future[CheckResult], tuple[_Instance, float]] = {}

        def finish(result: CheckResult) -> None:
            results[result.id] = result
            audit.record("check_result", phase=phase, **result.to_json())  # redacted as every record is
            if progress:
                progress(result.id, result)

        # A subset (verify) runs without the checks it would otherwise wait for. A need on a step with
        # hosts is its instance on the same engine if it has one there, else all of its instances.
        by_step: dict[str, list[_Instance]] = {}
        for instance in instances:
            by_step.setdefault(instance.step.id, []).append(instance)

        def needs_of(instance: _Instance) -> list[str]:
            ids: list[str] = []
            for need in instance.step.needs:
                of_need = by_step.get(need, [])
                same = [n for n in of_need if instance.host is not None and n.host == instance.host]
                ids.extend(n.id for n in (same or of_need))
            return ids

        needs = {instance.id: needs_of(instance) for instance in instances}
        try:
            while waiting or running:
                for instance in list(waiting):
                    step = instance.step
                    if len(running) >= self.settings.max_parallel_checks:
                        break
                    if any(need not in results for need in needs[instance.id]):
                        continue
                    waiting.remove(instance)
                    if instance.error is not None:
                        finish(
                            CheckResult(instance.id, step.check, Status.UNKNOWN, instance.error, 0.0, code="bad_hosts")
                        )
                        continue
                    failed = [n for n in needs[instance.id] if results[n].status not in (Status.OK, Status.WARNING)]
                    if failed:
                        finish(self._skipped(instance, failed, results))
                        continue
                    deadline = time.monotonic() + step.timeout
                    future = _THREADS.start(
                        lambda instance=instance, deadline=deadline: self._run_one(
                            instance, context, clients, deadline
                        ),  # type: ignore[misc]
                        f"check-{instance.id}",
                    )
                    if future is None:
                        finish(self._not_started(instance))
                        continue
                    if progress:
                        progress(instance.id, None)
                    running[future] = (instance, deadline)
                if not running:
                    continue
                next_deadline = min(deadline for _, deadline in running.values())
                done, _ = wait(running, timeout=max(0.0, next_deadline - time.monotonic()), return_when=FIRST_COMPLETED)
                now = time.monotonic()
                for future in list(running):
                    instance, deadline = running[future]
                    if future in done:
                        del running[future]
                        finish(future.result())
                    elif now >= deadline:
                        # A thread cannot be killed; its clients' watchdogs end it soon. The run moves on.
                        del running[future]
                        _THREADS.abandon(future)
                        finish(
                            CheckResult(
                                instance.id,
                                instance.step.check,
                                Status.CRITICAL,
                                f"timed out after {instance.step.timeout:g}s",
                                instance.step.timeout * 1000,
                                code="timeout",
                            )
                        )
        finally:
            for future in running:
                _THREADS.abandon(future)
            if phase != "diagnose":
                clients.close()
        return [results[instance.id] for instance in instances]

    def _not_started(self, instance: _Instance) -> CheckResult:
        why = f"not run: {_THREADS.stuck} checks are still running past their deadline (a target not answering)"
        return CheckResult(instance.id, instance.step.check, Status.UNKNOWN, why, 0.0, code="too_many_stuck_checks")

    def _skipped(self, instance: _Instance, failed: list[str], results: dict[str, CheckResult]) -> CheckResult:
        why = ", ".join(f"{n} is {results[n].status.value}" for n in failed)
        return CheckResult(
            instance.id, instance.step.check, Status.UNKNOWN, f"not run: {why}", 0.0, code="dependency_failed"
        )

    def _run_one(
        self, instance: _Instance, context: dict[str, Any], clients: RunClients, deadline: float
    ) -> CheckResult:
        start = time.monotonic()
        step = instance.step

        def result(outcome: Outcome) -> CheckResult:
            return CheckResult(
                id=instance.id,
                check=step.check,
                status=outcome.status,
                summary=self.redactor.text(outcome.summary),
                duration_ms=(time.monotonic() - start) * 1000,
                details=self.redactor.data(outcome.details),
                metrics=dict(outcome.metrics),
                code=outcome.code,
                thresholds=dict(outcome.thresholds),
            )

        try:
            plugin = self.registry.check(step.check)
            if instance.host is not None:  # `host` in its templates: the engine it runs on
                labels = self.settings.engines[instance.host].labels
                context = {**context, "host": host_view(instance.host, labels)}
            values = self.templates.render(step.with_, context)
            params = plugin.params.model_validate(values)
            outcome = plugin.func(CheckContext(clients.on(instance.host), step.timeout, deadline), params)
        except TemplateError as exc:
            outcome = Outcome(Status.UNKNOWN, str(exc), code="template_error")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            outcome = Outcome(Status.UNKNOWN, f"bad parameter with.{where}: {first['msg']}", code="bad_params")
        except Exception as exc:
            outcome = self._failed(step, exc, deadline)
        return result(outcome)

    @staticmethod
    def _failed(step: CheckStep, exc: Exception, deadline: float) -> Outcome:
        if time.monotonic() >= deadline:
            # Cut at its deadline by a watchdog: whatever error the cut surfaced as (a closed connection, an
            # unreachable engine), the cause is the deadline, as when the run stops waiting for the thread.
            return Outcome(Status.CRITICAL, f"timed out after {step.timeout:g}s", code="timeout")
        if isinstance(exc, TargetUnreachable):
            return Outcome(Status.CRITICAL, exc.message, code=exc.code)
        if isinstance(exc, TimeoutError | ConnectionError):
            return Outcome(Status.CRITICAL, f"target unreachable: {exc}", code="unreachable")
        # A bug or bad data in a check is a result, never an aborted run.
        return Outcome(Status.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}", code="check_error")

    # --- remediations ----------------------------------------------------------------------------

    def _decide(self, runbook: LoadedRunbook, params: dict[str, Any], report: RunReport) -> list[RemediationDecision]:
        """Which remediations the check results call for, and why (their `when:`)."""
        views = _views(runbook.spec.checks, report.checks)
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
        wanted = any(d.would_apply for d in report.remediations)
        # In a dry run, a dry-run process or a plan-only environment no applier exists: nothing below can
        # change anything.
        applier = self._applier() if wanted and not dry_run else None
        if applier is not None and self.state is None:
            applier.close()
            raise RunbookError("remediation needs the state store (limits and locks); none was given")
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
                context=self._context(params),
                statuses={c.id: _finding(c.status.value, c.code) for c in report.checks},
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
        secret_params: Mapping[str, str] | None = None,
    ) -> RemediationDecision:
        """A person's answer to a pending manual remediation. Approving plans again and applies only if
        the plan is the one approved (PlanChanged otherwise); either answer is given once only. Only a
        live process approves, and only a run that was itself live."""
        if self.state is None:
            raise RunbookError("approvals need the state store")
        run = self.state.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        if approve and run["mode"] != "live":
            raise Conflict(f"run {run_id} was a {run['mode']} run: its plans are never applied; run it live to act")
        if approve and self.dry_run:
            raise Conflict("this agent runs in dry-run mode and applies nothing; approve from a live agent")
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
        step = next((r for r in runbook.spec.remediations if r.id == rem_id), None)
        if step is None:  # the runbook was changed since, and reloaded: nothing left to decide on
            raise NotFound(f"remediation {rem_id!r} is no longer in runbook {runbook.spec.id!r}")
        audit = _Audit(self.audit.bind(run_id=run_id, actor=approver, mode="live", runbook=runbook.spec.id))
        decision = RemediationDecision(step.id, step.do, step.approval, True, f"pending since run {run_id}")
        if not approve:
            if not self.state.take_pending(run_id, rem_id):
                raise NotFound(f"remediation {rem_id} of run {run_id} was already decided")
            decision.decision, decision.decision_reason = "rejected", f"rejected by {approver}: {reason}".rstrip(": ")
            audit.record("remediation_decision", **self.redactor.data(decision.to_json()))
            self._store_decision(run_id, decision)
            return decision
        params = self._params_again(run, runbook, secret_params or {})
        verify_checks = self._verifier(runbook, params, audit)
        applier = self._applier()
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
                    context=self._context(params),
                    # The diagnosis the remediation was planned from (`hosts: failing:CHECK`), as recorded.
                    statuses={
                        c["id"]: _finding(c["status"], c.get("code"))
                        for c in ((run.get("report") or {}).get("checks") or [])
                    },
                )
            except PlanChanged:
                # Still waiting for a person, who must now look at the new plan: it is the one pending
                # (its fingerprint is what an approval of it must name).
                now_fp = str((decision.plan or {}).get("fingerprint") or pending_fp)
                self.state.add_pending(run_id, rem_id, now_fp, decision.plan or {})
                audit.record("pending_plan_replaced", remediation=rem_id, was=pending_fp, now=now_fp)
                raise
        finally:
            if applier is not None:
                applier.close()
        self._store_decision(run_id, decision)
        return decision

    def _params_again(self, run: dict[str, Any], runbook: LoadedRunbook, secrets: Mapping[str, str]) -> dict[str, Any]:
        """The params a run had: its stored overrides, and its secret ones given again by the approver
        (never stored). The plan's fingerprint then shows whether they are the same."""
        wanted = set(run.get("secret_params") or [])
        missing, extra = sorted(wanted - set(secrets)), sorted(set(secrets) - wanted)
        if missing:
            raise Conflict(
                f"run {run['run_id']} was given secret param(s) {', '.join(missing)}, which are never stored:"
                f" approve it from the CLI with --param-file giving them again"
            )
        if extra:
            raise ParamError(f"run {run['run_id']} had no secret override of {', '.join(extra)}")
        return self.resolve_params(runbook, {**run["params"], **secrets}).values

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

    def _verifier(self, runbook: LoadedRunbook, params: dict[str, Any], audit: _Audit) -> CheckRunner:
        """Runs named checks again, each time with fresh clients (the target may have been replaced); on
        the given engines only, for the steps that have hosts (a rollout verifying the hosts it changed)."""
        by_id = {s.id: s for s in runbook.spec.checks}

        def verify_checks(ids: list[str], hosts: list[str] | None = None) -> list[CheckResult]:
            steps = [by_id[i] for i in ids]
            return self._run_checks(steps, params, RunClients(self.settings), audit, None, "verify", hosts)

        return verify_checks

    def _store_decision(self, run_id: str, decision: RemediationDecision) -> None:
        assert self.state is not None
        with self.state.write():  # read and written at once: the run's own process may be writing it too
            run = self.state.run(run_id)
            report = (run or {}).get("report") or {}
            report["remediations"] = [
                decision.to_json() if r.get("id") == decision.id else r for r in report.get("remediations", [])
            ]
            self.state.set_run(run_id, (run or {}).get("status", "finished"), report=self.redactor.data(report))


def _views(steps: list[CheckStep], results: list[CheckResult]) -> dict[str, Any]:
    """What `when:` sees as `checks`: each result by its id (`checks['app@web-2']`), and a step with hosts
    also by its own id: the worst status of its hosts, which failed, and each host's view."""
    views: dict[str, Any] = {r.id: r.view() for r in results}
    for step in steps:
        if step.hosts is None:
            continue
        mine = {r.id.partition("@")[2]: r for r in results if r.id.startswith(step.id + "@")}
        if not mine:
            continue  # its hosts could not be resolved: its one result is already under its id
        status = worst(r.status for r in mine.values())
        views[step.id] = {
            "ok": status is Status.OK,
            "status": status.value,
            "summary": "; ".join(f"{host}: {r.summary}" for host, r in mine.items() if r.status is not Status.OK),
            "code": next((r.code for r in mine.values() if r.status is status), None),
            "failing": [host for host, r in mine.items() if r.status is not Status.OK],
            "hosts": {host: r.view() for host, r in mine.items()},
            "metrics": {},
            "details": {},
        }
    return views


# Results that say nothing of the target: its engine could not be reached or answer in time.
_NOT_FINDINGS = frozenset({"docker_unreachable", "unreachable", "timeout", "closed"})


def _finding(status: str, code: str | None) -> str:
    """A result's status as `failing:CHECK` reads it: a CRITICAL that is no finding is UNREACHABLE."""
    return "UNREACHABLE" if code in _NOT_FINDINGS else status
