"""The daemon's work: take alerts (recorded before they are answered), route them, dedup storms, run
runbooks on a bounded queue, run scheduled sweeps, and shut down without starting new remediations."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from agent import logs, memory
from agent.alerts import IncomingAlert, alert_params, params_refused, route, target_key
from agent.audit import AuditLog
from agent.config import Settings
from agent.exceptions import AuditError, RunbookError, StateUnavailable
from agent.executor import Executor
from agent.incidents import IncidentPolicy, Incidents, RunOrigin, incident_target
from agent.loader import RunbookSet
from agent.metrics import Metrics
from agent.models import CheckResult, RunReport
from agent.notify.outbox import Courier
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor
from agent.retention import prune
from agent.state import QueuedRun, StateStore
from agent.status import Status

__all__ = ["Daemon", "Disposition", "QueueFull"]


@dataclass(frozen=True)
class _Queued:
    """A run waiting for a worker, and where it came from (for its incident)."""

    run_id: str
    runbook: str
    params: dict[str, str]
    actor: str
    target: str
    origin: RunOrigin


# A queued run no agent began within this time is interrupted, not begun late, and its incident hears of
# it (UNKNOWN: nothing was checked). A run begins with its checks, so one begun late acts only on what is
# true then; the bound is for a queue nobody takes from (every agent of its mode stopped).
QUEUED_MAX_AGE = 3600.0
STALE_SWEEP_EVERY = 30.0
# How often an idle worker looks in the shared queue for runs other agents queued (its own agent's wake
# it at once).
QUEUE_POLL = 0.5

LARGE_PAYLOAD = 1000  # alerts: a payload whose parsed form is worth returning to the system afterwards


class _Arrival:
    """One payload waiting for its batch to be committed, and what became of it. Its sender waits on a
    threading event (a thread) or an asyncio future (the API's event loop)."""

    def __init__(
        self,
        alerts: list[IncomingAlert],
        *,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.alerts = alerts
        self.settled = False
        self.results: list[Disposition] = []
        self.error: Exception | None = None
        self.future = future
        self.event = threading.Event() if future is None else None

    def settle(self, *, results: list[Disposition] | None = None, error: Exception | None = None) -> None:
        self.results, self.error, self.settled = results or [], error, True


def _answered(arrivals: list[_Arrival]) -> None:
    """On an event loop: wake the requests whose payloads a batch has settled."""
    for arrival in arrivals:
        if arrival.future is not None and not arrival.future.done():  # done: the client went away
            arrival.future.set_result(None)


class QueueFull(Exception):
    """More runs waiting than the queue holds: the sender should retry later (Alertmanager does)."""


@dataclass(frozen=True, slots=True)  # slotted: a storm's answer holds 10,000
class Disposition:
    fingerprint: str
    status: str
    outcome: str  # run_started | deduplicated | no_runbook | resolved | refused
    runbook: str | None = None
    run_id: str | None = None
    reason: str = ""
    target: str | None = None  # (the daemon's own: not in the answer)

    def to_json(self) -> dict[str, Any]:
        shown = (
            ("fingerprint", self.fingerprint),
            ("status", self.status),
            ("outcome", self.outcome),
            ("runbook", self.runbook),
            ("run_id", self.run_id),
            ("reason", self.reason),
        )
        return {k: v for k, v in shown if v not in (None, "")}


class Daemon:
    def __init__(
        self,
        runbooks: RunbookSet,
        settings: Settings,
        redactor: Redactor,
        *,
        policy: EnvironmentPolicy,
        incident_policy: IncidentPolicy | None = None,
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
        self.state = StateStore(settings.state_location)
        # This daemon among the agents sharing the state (several, on PostgreSQL): its heartbeat tells the
        # others it is alive; when it stops, they interrupt the runs it left.
        self.agent_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.state.agent_id = self.agent_id  # the runs it starts or continues are its own
        self._heart = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.audit = AuditLog(settings.audit_path, redactor, actor="daemon")
        self.audit.observer = logs.audit_records  # operators' lines for runs, decisions, escalations
        self.executor = Executor(
            runbooks, settings, redactor, self.audit, policy=policy, state=self.state, dry_run=dry_run
        )
        self.executor.close_later = True  # after each verdict, not before it
        self.stopping = threading.Event()
        self.incidents = Incidents(self.state, self.audit, incident_policy or IncidentPolicy(), redactor, runbooks)
        self.courier = Courier(self.incidents.outbox, dict(self.incidents.policy.channels), self.audit, redactor)
        # The run queue is the state's (shared by the agents on it); this agent's workers are woken here
        # when it queues a run, and look there every QUEUE_POLL seconds for the others'.
        self.queue_size = queue_size
        self._mode = "dry-run" if dry_run else "live"
        self._queued = threading.Condition()
        self._queued_generation = 0
        self._workers = [threading.Thread(target=self._work, name=f"run-{i}", daemon=True) for i in range(workers)]
        self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        # Routing, dedup and queueing happen one payload at a time, so two copies cannot both start a run
        # and the queue has room for a payload's runs when it is admitted.
        self._admit = threading.Lock()
        self._arrived = threading.Condition()
        self._arrivals: list[_Arrival] = []
        self._intake: threading.Thread | None = None
        self._large_payload = 0.0  # when the last payload of LARGE_PAYLOAD alerts or more arrived
        # Runs handed over by `runbook run` on this host (agent.local_runs): stop() waits for them too.
        self.local_runs: set[threading.Thread] = set()
        self._running: set[str] = set()
        # Set when the audit log could not be written: intake answers 503 and /readyz is false until
        # a write succeeds again (after `runbook audit repair`).
        self.audit_error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.state.register_agent(self.agent_id, _version(), self._mode)
        self._heart.start()
        for run_id in self.state.interrupt_orphans():
            # Left running by a process that died: recorded as interrupted, never resumed or re-applied.
            self.audit.record("run_interrupted", run_id=run_id, reason="the process running it ended (crash or kill)")
        for worker in self._workers:
            worker.start()
        self._scheduler.start()
        self.courier.start()

    def stop(self, deadline: float = 30.0) -> None:
        """Start nothing new; let in-flight checks finish (up to the deadline). Queued runs stay in the queue
        if another agent of this mode is alive to take them; with none, they are interrupted."""
        self.stopping.set()
        self._wake_workers()
        end = time.monotonic() + deadline
        try:
            # Stopping first, so that agents stopping together do not each leave the queue to the other.
            self.state.agent_stopping(self.agent_id)
            others = self.state.agents_alive(self.settings.agent_dead_after, besides=self.agent_id, mode=self._mode)
            left = [] if others else self.state.interrupt_queued(self._mode)
        except Exception as exc:  # the state unreachable: the others (or the stale sweep) will see to them
            left = []
            logs.log(logs.WARNING, "stop_queue_failed", error=self.redactor.text(f"{type(exc).__name__}: {exc}"))
        for run_id in left:
            self.audit.record("run_interrupted", run_id=run_id, reason="daemon stopped before it began")
        for worker in [*self._workers, *list(self.local_runs)]:
            worker.join(max(0.0, end - time.monotonic()))
        self.courier.stop()
        for run_id in list(self._running):
            run = self.state.run(run_id)
            if run is not None and run["status"] == "running":
                self.state.set_run(run_id, "interrupted", result="interrupted")
                self.audit.record("run_interrupted", run_id=run_id, reason="daemon stopped mid-run")
        self._heart.join(10)
        with contextlib.suppress(Exception):  # the state unreachable: the others see the heartbeat stop
            self.state.agent_stopped(self.agent_id)

    @property
    def ready(self) -> bool:
        threads = [*self._workers, self._scheduler]
        return not self.stopping.is_set() and all(t.is_alive() for t in threads) and self.audit_ok()

    def audit_ok(self) -> bool:
        """The audit log can take a record: without it nothing is accepted (fail closed)."""
        self.audit_error = self.audit.problem()
        return self.audit_error is None

    # --- alerts -------------------------------------------------------------------------------------------

    async def receive_async(self, alerts: list[IncomingAlert]) -> list[Disposition]:
        """Record and route a payload's alerts (see `receive`), waiting on the event loop, not on a thread:
        a request costs the loop no thread hand-off, and a batch wakes all its requests at once."""
        arrival = _Arrival(alerts, future=asyncio.get_running_loop().create_future())
        self._submit(arrival)
        assert arrival.future is not None
        await arrival.future
        return self._answer(arrival)

    def receive(self, alerts: list[IncomingAlert]) -> list[Disposition]:
        """Record and route a payload's alerts, all or nothing: the decisions are made first; then the
        audit record, then the alerts, the runs they start and the incidents they close, committed; only
        then are runs queued and the payload answered. A payload whose new runs the queue cannot hold is
        refused whole (QueueFull: the sender retries) with nothing recorded; so is one the audit log
        cannot take.

        Group commit: one intake thread takes the payloads that arrived while it wrote the last batch and
        writes them together — each under its own savepoint, in one transaction and one audit fsync — so
        a storm of single-alert deliveries costs one disk flush per batch, not per request. None is
        answered before its own record is durable."""
        arrival = _Arrival(alerts)
        self._submit(arrival)
        assert arrival.event is not None
        arrival.event.wait()
        return self._answer(arrival)

    def _submit(self, arrival: _Arrival) -> None:
        if len(arrival.alerts) >= LARGE_PAYLOAD:
            self._large_payload = time.monotonic()
        with self._arrived:
            self._arrivals.append(arrival)
            if self._intake is None or not self._intake.is_alive():
                self._intake = threading.Thread(target=self._take_arrivals, name="intake", daemon=True)
                self._intake.start()
            self._arrived.notify()

    def _take_arrivals(self) -> None:
        """The intake thread: commit what has arrived, a batch at a time, and wake its senders."""
        while True:
            with self._arrived:
                while not self._arrivals:
                    self._arrived.wait()
                batch, self._arrivals = self._arrivals, []
            self._commit(batch)
            del batch  # a 10,000-alert payload is not kept alive while the thread waits for the next

    def _commit(self, batch: list[_Arrival]) -> None:
        try:
            with self._admit:
                self._admit_batch(batch)
        except BaseException as exc:  # a bug: refuse the batch, keep taking payloads
            for arrival in batch:
                if not arrival.settled:
                    arrival.settle(error=RuntimeError(f"intake failed: {type(exc).__name__}"))
        finally:
            self._wake(batch)

    @staticmethod
    def _wake(batch: list[_Arrival]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Arrival]] = {}
        for arrival in batch:
            if arrival.event is not None:
                arrival.event.set()
            elif arrival.future is not None:
                by_loop.setdefault(arrival.future.get_loop(), []).append(arrival)
        for loop, arrivals in by_loop.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_answered, arrivals)

    def _answer(self, arrival: _Arrival) -> list[Disposition]:
        if arrival.error is not None:
            raise arrival.error
        for alert, result in zip(arrival.alerts, arrival.results, strict=True):
            self.metrics.alerts_received.labels(source=alert.source).inc()
            if result.outcome == "deduplicated":
                self.metrics.alerts_deduplicated.inc()
            elif result.outcome in ("no_runbook", "refused"):
                self.metrics.alerts_unrouted.inc()
        return arrival.results

    def _admit_batch(self, batch: list[_Arrival]) -> None:
        """Decide, audit and record a batch of payloads in one transaction; settle each arrival."""
        admitted: list[tuple[_Arrival, list[Disposition], list[dict[str, Any]]]] = []
        try:
            with self.state.write():  # the batch: one commit
                room = self.queue_size - self.state.queued_count(self._mode, time.time() - QUEUED_MAX_AGE)
                for arrival in batch:
                    try:
                        with self.state.write():  # this payload: a savepoint, undone alone if it is refused
                            decided: dict[tuple[str, str], Disposition] = {}
                            new_runs: list[dict[str, Any]] = []
                            resolved: list[tuple[str, str]] = []
                            results = [self._admit_one(a, decided, new_runs, resolved) for a in arrival.alerts]
                            if self.stopping.is_set() and new_runs:
                                raise QueueFull("the daemon is shutting down")
                            if len(new_runs) > room:
                                raise QueueFull(f"{len(new_runs)} new runs, room for {room}")
                            self._record(arrival.alerts, results, new_runs, resolved)
                    except StateUnavailable:
                        raise  # the state, not this payload: the whole batch is answered 503, to be retried
                    except (QueueFull, RunbookError, ValueError, KeyError, TypeError) as exc:
                        # Refused, or a payload that trips a bug: undone alone; the rest of the batch goes on.
                        arrival.settle(error=exc)
                        logs.log(logs.WARNING, "alerts_refused", count=len(arrival.alerts), reason=str(exc))
                        continue
                    room -= len(new_runs)
                    admitted.append((arrival, results, new_runs))
                # Audited before the commit: what is recorded was audited first, or nothing is recorded.
                try:
                    self.audit.record_many(
                        [
                            ("alerts_received", {"count": len(a.alerts), **self._summary(a.alerts, results)})
                            for a, results, _ in admitted
                        ]
                    )
                except AuditError as exc:
                    self.audit_error = exc.message
                    raise
        except Exception as exc:  # nothing of the batch was recorded: every payload in it is refused
            for arrival in batch:
                if not arrival.settled:
                    arrival.settle(error=exc)
                    logs.log(logs.ERROR, "alerts_refused", count=len(arrival.alerts), reason=str(exc))
            return
        try:
            if queued := sum(len(new_runs) for _, _, new_runs in admitted):
                self._wake_workers(queued)
            for arrival, results, _ in admitted:
                arrival.settle(results=results)
                with contextlib.suppress(Exception):  # a log line never keeps the next payload from its queue
                    _log_dispositions(arrival.alerts, results)
        finally:
            for arrival in batch:  # never a follower left to read empty results as success
                if not arrival.settled:
                    arrival.settle(error=RuntimeError("recorded, but not queued: see `runbook runs`"))

    def _record(
        self,
        alerts: list[IncomingAlert],
        results: list[Disposition],
        new_runs: list[dict[str, Any]],
        resolved: list[tuple[str, str]],
    ) -> None:
        self.state.record_intake(
            (  # made as they are written: a storm's 10,000 rows are never all held at once
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
            ),
            new_runs,
            resolved,
        )
        # Inside the same transaction: each incident update its own savepoint, so one that fails (recorded,
        # never raised) leaves the alerts recorded and every other incident updated.
        self._tell_incidents(alerts, results)

    @staticmethod
    def _summary(alerts: list[IncomingAlert], results: list[Disposition]) -> dict[str, Any]:
        """What a payload was and what became of it, for the audit log: one record however many alerts."""
        groups: dict[tuple[Any, ...], list[str]] = {}
        for alert, result in zip(alerts, results, strict=True):
            key = (alert.name, alert.status, result.outcome, result.runbook, result.run_id, result.reason)
            groups.setdefault(key, []).append(alert.fingerprint)
        return {
            "source": alerts[0].source if alerts else None,
            "groups": [
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
                for k, fps in list(groups.items())[:100]
            ],
            "groups_omitted": max(0, len(groups) - 100),
        }

    def _admit_one(
        self,
        alert: IncomingAlert,
        decided: dict[tuple[str, str], Disposition],
        new_runs: list[dict[str, Any]],
        resolved: list[tuple[str, str]],
    ) -> Disposition:
        """Decide what one alert does. Reads the state store, writes nothing: `receive` records it all."""
        runbook = route(self.runbooks, alert)
        if runbook is None:
            return Disposition(alert.fingerprint, alert.status, "no_runbook", reason="no runbook trigger matches")
        name = runbook.spec.id
        mapped = alert_params(runbook, alert)
        if mapped.refused is not None:
            return Disposition(alert.fingerprint, alert.status, "refused", name, reason=mapped.refused)
        params = mapped.params
        target = target_key(params)

        def result(outcome: str, run_id: str | None = None, reason: str = "") -> Disposition:
            return Disposition(alert.fingerprint, alert.status, outcome, name, run_id, reason, target)

        if alert.status == "resolved":
            # The incident is over: the next firing alert for it may start a run again.
            decided.pop((name, target), None)
            resolved.append((name, target))
            return result("resolved", reason="incident closed")
        if (name, target) in decided:
            return result("deduplicated", decided[(name, target)].run_id, "a run for this incident is in progress")
        active = self.state.active_run(name, target)
        # A resolution earlier in this payload closes the incident for what follows it, as a stored one does.
        recent = active or (
            None if (name, target) in resolved else self.state.recent_run(name, target, time.time() - self.dedup_window)
        )
        if recent:
            why = "a run for this incident is in progress" if active else "a run for this incident just ran"
            decided[(name, target)] = result("deduplicated", recent, why)
            return decided[(name, target)]
        run_id = uuid.uuid4().hex[:12]
        actor = f"alert:{alert.name}:{alert.fingerprint}"
        new_runs.append(
            {
                "run_id": run_id,
                "runbook": name,
                "target": target,
                "mode": "dry-run" if self.dry_run else "live",
                "actor": actor,
                "params": params,
                "origin": asdict(RunOrigin(actor, alert.name, alert.labels.get("severity"), alert.starts_at)),
            }
        )
        decided[(name, target)] = result("deduplicated", run_id, "a run for this incident is in progress")
        return result("run_started", run_id)

    # --- scheduled sweeps -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        due: dict[str, float] = {}
        next_prune = time.monotonic() + 60
        next_stale = time.monotonic() + STALE_SWEEP_EVERY
        trimmed = 0.0
        while not self.stopping.wait(1.0):
            try:
                now = time.monotonic()
                # What a storm's payloads left in the heap goes back to the system: a second after the
                # last large payload (its request is gone by then), and once a minute anyway.
                if (self._large_payload > trimmed and now - self._large_payload >= 1.0) or now - trimmed >= 60:
                    memory.trim()
                    trimmed = now
                if time.monotonic() >= next_stale:
                    next_stale = time.monotonic() + STALE_SWEEP_EVERY
                    self._sweep_stale()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 3600  # a failed prune is tried next hour, not every second
                    self.prune()
                self._sweeps_due(due)
                # The escalation path and the severity targets run on this clock too.
                self.incidents.tick()
            except Exception as exc:
                # A failed pass (the audit log torn, the state store busy) is tried again next second:
                # a dead scheduler would end sweeps and retention for good.
                with contextlib.suppress(AuditError):
                    self.audit.record("schedule_failed", error=self.redactor.text(f"{type(exc).__name__}: {exc}"))

    def _beat(self) -> None:
        """The heartbeat, on a thread and a connection of its own: nothing else this agent does (a long
        prune, a write waiting on another agent's) delays it, so no live agent is taken for lost. It
        also interrupts the runs of an agent that is (killed -9, its host gone): recorded once, by
        whichever agent sees it first, never re-applied."""
        every = max(0.5, self.settings.agent_dead_after / 6)
        store: StateStore | None = None
        try:
            while True:
                try:
                    store = store or StateStore(self.settings.state_location)
                    store.heartbeat(self.agent_id)
                    for run_id, agent in store.interrupt_lost(self.settings.agent_dead_after):
                        self.audit.record(
                            "run_interrupted",
                            run_id=run_id,
                            reason=f"agent {agent} stopped its heartbeat (killed, or its host lost)",
                        )
                except Exception as exc:  # the state unreachable for now: beat again next time
                    logs.log(logs.WARNING, "heartbeat_failed", error=self.redactor.text(f"{type(exc).__name__}: {exc}"))
                if self.stopping.wait(every):
                    return
        finally:
            if store is not None:
                store.close()

    def _sweeps_due(self, due: dict[str, float]) -> None:
        """Queue the scheduled runbooks whose time has come (one queued or running run each at most)."""
        now = time.monotonic()
        for loaded in self.runbooks.runbooks.values():
            schedule = loaded.spec.schedule
            if schedule is None or now < due.get(loaded.spec.id, 0.0):
                continue
            due[loaded.spec.id] = now + schedule.every
            with self._admit:
                # Checked and recorded in one write: agents sharing the state, each on its own clock, run a
                # scheduled runbook once per period between them, not once each.
                with self.state.write():
                    recent = time.time() - 0.9 * schedule.every
                    if (
                        self.state.queued_count(self._mode, time.time() - QUEUED_MAX_AGE) >= self.queue_size
                        or self.state.active_run(loaded.spec.id, "-")
                        or self.state.recent_run(loaded.spec.id, "-", recent)
                    ):
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
                        origin=asdict(RunOrigin("schedule")),
                    )
                self._wake_workers(1)

    def prune(self) -> dict[str, int]:
        """Retention: the state store keeps alerts and runs for the configured times (the audit log,
        the record, is kept whole)."""
        return prune(self.state, self.settings, self.audit)

    # --- runs ------------------------------------------------------------------------------------------------

    def _sweep_stale(self) -> None:
        """Queued runs no agent began in QUEUED_MAX_AGE: interrupted, audited, and told to their incidents."""
        for stale in self.state.interrupt_stale(time.time() - QUEUED_MAX_AGE):
            reason = f"queued {QUEUED_MAX_AGE:g}s, begun by no agent"
            self.audit.record("run_interrupted", run_id=stale.run_id, reason=reason)
            queued = self._queued_of(stale)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            self.guarded(self.incidents.after_run, self._unfinished(queued, now, reason), queued.origin)

    def _wake_workers(self, runs: int | None = None) -> None:
        """Wake one idle worker per new run (all of them: stopping)."""
        with self._queued:
            self._queued_generation += 1
            if runs is None:
                self._queued.notify_all()
            else:
                self._queued.notify(runs)

    @staticmethod
    def _queued_of(claimed: QueuedRun) -> _Queued:
        fields = {name: claimed.origin[name] for name in RunOrigin.__dataclass_fields__ if name in claimed.origin}
        origin = RunOrigin(**{"actor": claimed.actor, **fields})
        return _Queued(claimed.run_id, claimed.runbook, claimed.params, claimed.actor, claimed.target, origin)

    def _next_run(self) -> _Queued | None:
        """The oldest run in the shared queue this agent can run (its mode, a runbook it has), taken:
        woken at once for a run this agent queued, within QUEUE_POLL for another agent's."""
        with self._queued:
            generation = self._queued_generation
        if self.stopping.is_set():
            return None
        try:
            claimed = self.state.claim_run(self._mode, list(self.runbooks.runbooks), time.time() - QUEUED_MAX_AGE)
        except Exception as exc:  # the state unreachable for now: a worker lives on, and looks again later
            logs.log(logs.WARNING, "queue_unavailable", error=self.redactor.text(f"{type(exc).__name__}: {exc}"))
            self.stopping.wait(QUEUE_POLL * 10)
            return None
        if claimed is None:
            with self._queued:
                if self._queued_generation == generation and not self.stopping.is_set():
                    self._queued.wait(QUEUE_POLL)
            return None
        if self.stopping.is_set():
            # Taken as this agent began to stop: nothing began, so it goes back, for an agent that is not.
            with contextlib.suppress(Exception):
                if self.state.unclaim(claimed):
                    return None
        if claimed.queued_by not in (None, self.agent_id):
            with contextlib.suppress(AuditError):
                self.audit.record("run_taken", run_id=claimed.run_id, queued_by=claimed.queued_by)
        return self._queued_of(claimed)

    def _work(self) -> None:
        while not self.stopping.is_set():
            queued = self._next_run()
            if queued is None:
                continue
            self._running.add(queued.run_id)
            started = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                loaded = self.runbooks.runbooks.get(queued.runbook)
                from_alert = queued.actor.startswith("alert:")
                if from_alert and loaded is not None and (refused := params_refused(loaded, queued.params)):
                    raise RunbookError(f"queued with alert params this agent's runbook refuses: {refused}")
                report = self.executor.run(
                    queued.runbook,
                    overrides=queued.params,
                    dry_run=self.dry_run,
                    actor=queued.actor,
                    run_id=queued.run_id,
                    target=queued.target,
                    stop=self.stopping,
                )
                self.metrics.observe(report)
            except Exception as exc:
                error = self.redactor.text(f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(AuditError):
                    self.audit.record("run_failed", run_id=queued.run_id, error=error)
                with contextlib.suppress(Exception):  # taken from the queue, not finished: not left running
                    self.state.interrupt_own(queued.run_id)
                self.metrics.runs.labels(runbook=queued.runbook, status="ERROR").inc()
                # A run that could not finish has found nothing OK: the incident hears of it as UNKNOWN.
                report = self._unfinished(queued, started, error)
            finally:
                self._running.discard(queued.run_id)
            self.guarded(self.incidents.after_run, report, queued.origin)

    def _unfinished(self, queued: _Queued, started: str, error: str) -> RunReport:
        """The report of a run that raised before it finished: UNKNOWN, with the error as its one finding."""
        loaded = self.runbooks.runbooks.get(queued.runbook)
        params: dict[str, Any] = dict(queued.params)
        if loaded is not None:
            with contextlib.suppress(Exception):
                params = self.executor.resolve_params(loaded, queued.params).values
        return RunReport(
            run_id=queued.run_id,
            runbook=queued.runbook,
            title=loaded.spec.title if loaded else queued.runbook,
            severity=loaded.spec.severity if loaded else "SEV-2",
            mode="dry-run" if self.dry_run else "live",
            actor=queued.actor,
            started_at=started,
            status=Status.UNKNOWN,
            params=params,
            checks=[CheckResult("run", "runbook", Status.UNKNOWN, f"the run did not finish: {error}"[:300], 0.0)],
        )

    def guarded(self, work: Callable[..., object], *args: Any) -> None:
        """Incident bookkeeping never takes a worker or the intake down with it: a failure is recorded."""
        try:
            work(*args)
        except Exception as exc:
            with contextlib.suppress(AuditError):
                self.audit.record("incident_update_failed", error=self.redactor.text(f"{type(exc).__name__}: {exc}"))

    def _tell_incidents(self, alerts: list[IncomingAlert], results: list[Disposition]) -> None:
        """Resolved alerts resolve their incident; alerts that joined one are noted on its timeline."""
        joined: dict[tuple[str, str], dict[str, int]] = {}
        targets: dict[tuple[str, str], str] = {}  # one payload's alerts for one target: resolved once
        for alert, result in zip(alerts, results, strict=True):
            if result.runbook is None or result.outcome not in ("resolved", "deduplicated"):
                continue
            key = (result.runbook, result.target or "-")
            if key not in targets:
                targets[key] = self._incident_target(result.runbook, alert)
            target = targets[key]
            if result.outcome == "resolved":
                actor = f"alert:{alert.name}:{alert.fingerprint}"
                self.guarded(self.incidents.alert_resolved, result.runbook, target, actor)
            else:
                names = joined.setdefault((result.runbook, target), {})
                names[alert.name] = names.get(alert.name, 0) + 1
        for (runbook, target), names in joined.items():
            self.guarded(self.incidents.alerts_joined, runbook, target, names)

    def _incident_target(self, runbook_id: str, alert: IncomingAlert) -> str:
        loaded = self.runbooks.runbooks[runbook_id]
        mapped = alert_params(loaded, alert)
        try:
            params = self.executor.resolve_params(loaded, mapped.params).values
        except RunbookError:
            params = dict(mapped.params)
        return incident_target(loaded.spec, params)


def _log_dispositions(alerts: list[IncomingAlert], results: list[Disposition]) -> None:
    """One line per alert and what became of it: the first MAX_ALERT_LINES of a payload one by one, the
    rest counted in one line (a 10,000-alert group is one line more, not 10,000)."""
    if not logs.enabled(logs.INFO):
        return
    for alert, result in itertools.islice(zip(alerts, results, strict=True), logs.MAX_ALERT_LINES):
        logs.log(
            logs.INFO,
            "alert",
            alertname=alert.name,
            status=alert.status,
            fingerprint=alert.fingerprint,
            outcome=result.outcome,
            runbook=result.runbook,
            run_id=result.run_id,
            reason=result.reason or None,
        )
    if len(alerts) > logs.MAX_ALERT_LINES:
        outcomes: dict[str, int] = {}
        for result in results[logs.MAX_ALERT_LINES :]:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        logs.log(logs.INFO, "alerts_more", count=len(alerts) - logs.MAX_ALERT_LINES, **outcomes)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runbook")
    except PackageNotFoundError:
        return "unknown"
