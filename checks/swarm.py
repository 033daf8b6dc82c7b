"""Checks of Docker Swarm, through the manager's own API: a service's tasks (desired against running,
recent failures and why, a stalled update) and the nodes (ready, available, managers reachable)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from agent.plugin_api import CheckContext, Duration, Outcome, Params, PluginSet, Status, above, worst
from checks.docker import _within_deadline, engine_time

plugins = PluginSet("swarm")

MAX_TASKS = 1000  # tasks looked at for failures and their reasons (the newest); counts come from the manager
MAX_MESSAGE = 200  # characters of a task's error shown
MAX_NODES_SHOWN = 100  # nodes listed in a result's details (all are counted)


class ServiceParams(Params):
    service: str = Field(description="Swarm service name (exactly: never an id or a prefix of one).")
    window: Duration = Field(
        600.0,
        description="Task failures this recent count (10m; Swarm keeps a few tasks per slot: task_history_limit).",
    )
    warn_failures: int = Field(1, ge=1, description="Failed tasks in the window from which it is WARNING.")
    crit_failures: int = Field(3, ge=1, description="Failed tasks in the window from which it is CRITICAL.")


class NodesParams(Params):
    min_ready: int = Field(1, ge=0, description="Fewer nodes ready and active than this is CRITICAL.")


def _manager(ctx: CheckContext) -> Any | None:
    """The engine's client if it is a swarm manager (only a manager can answer for services and nodes)."""
    client = ctx.clients.docker()
    return client if client.info().get("Swarm", {}).get("ControlAvailable") else None


def _not_manager() -> Outcome:
    return Outcome(Status.UNKNOWN, "this Docker engine is not a swarm manager", code="not_swarm_manager")


def _epoch(raw: Any) -> float | None:
    """A task's timestamp as a Unix time."""
    when = engine_time(raw)
    return when.timestamp() if when else None


def _why(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    text = status.get("Err") or status.get("Message") or status.get("State") or "?"
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    shown = f"{text} (exit {code})" if code not in (None, 0) and "exit" not in str(text) else str(text)
    return "".join(c if c.isprintable() else "?" for c in shown[:MAX_MESSAGE])


def _counts(client: Any, inspected: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[int, int]:
    """(desired, running) tasks, as the manager counts them (ServiceStatus, API 1.41: right for global
    services and during restarts too); counted from the task list on an older engine."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    try:
        listed = client.api.services(filters={"id": inspected["ID"]}, status=True)
        status = next((s.get("ServiceStatus") for s in listed if s.get("ID") == inspected["ID"]), None)
        if status:
            return int(status.get("DesiredTasks", 0)), int(status.get("RunningTasks", 0))
    except docker.errors.InvalidVersion:
        pass
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    running = sum((t.get("Status") or {}).get("State") == "running" for t in wanted)
    mode = inspected["Spec"].get("Mode") or {}
    return (int(mode["Replicated"].get("Replicas", 1)) if "Replicated" in mode else len(wanted)), running


def service_by_name(client: Any, name: str) -> dict[str, Any] | None:
    """The service named exactly `name`. The engine would also take an id or a unique id prefix: a
    name a runbook (or an alert, through a pattern) gives must never reach another service that way."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    try:
        found: dict[str, Any] = client.api.inspect_service(name)
    except docker.errors.NotFound:
        return None
    return found if found.get("Spec", {}).get("Name") == name else None


@plugins.check("swarm.service", ServiceParams)
@_within_deadline
def service(ctx: CheckContext, params: ServiceParams) -> Outcome:
    """A Swarm service: tasks running against desired, tasks failed recently (and the last error), tasks
    the scheduler cannot place (and why), and an update that paused or was rolled back for failing."""
    client = _manager(ctx)
    if client is None:
        return _not_manager()
    inspected = service_by_name(client, params.service)
    if inspected is None:
        return Outcome(Status.CRITICAL, f"no swarm service {params.service}", code="service_missing")
    name = params.service
    tasks = client.api.tasks(filters={"service": inspected["ID"]})
    desired, running = _counts(client, inspected, tasks)
    # Newest first, by time (RFC 3339 text does not sort: "...:00Z" after "...:00.5Z"); the failures and
    # reasons shown come from the newest MAX_TASKS (Swarm keeps a few per slot: task_history_limit).
    tasks.sort(key=lambda t: _epoch((t.get("Status") or {}).get("Timestamp")) or 0.0, reverse=True)
    history = tasks[:MAX_TASKS]
    since = time.time() - params.window
    failed = [
        t
        for t in history
        if (t.get("Status") or {}).get("State") in ("failed", "rejected")
        and (_epoch((t.get("Status") or {}).get("Timestamp")) or 0) >= since
    ]
    waiting = [
        t
        for t in history
        if t.get("DesiredState") == "running"
        and (t.get("Status") or {}).get("State") in ("pending", "assigned", "preparing")
    ]

    statuses = [Status.OK]
    parts = [f"{name}: {running}/{desired} tasks running"]
    code = None
    if running < desired:
        statuses.append(Status.CRITICAL if not running else Status.WARNING)
        code = "tasks_not_running"
    if waiting:
        parts.append(f"{len(waiting)} not placed: {_why(waiting[0])}")
    failures = above(len(failed), params.warn_failures, params.crit_failures)
    if failed:
        parts.append(f"{len(failed)} failed in the last {params.window:g}s (last: {_why(failed[0])})")
        statuses.append(failures)
        code = code or ("task_failures" if failures is not Status.OK else None)
    update = inspected.get("UpdateStatus") or {}
    message = "".join(c if c.isprintable() else "?" for c in str(update.get("Message", ""))[:MAX_MESSAGE])
    if update.get("State") in ("paused", "rollback_paused") or (
        update.get("State") == "rollback_completed" and "failure" in message
    ):
        parts.append(f"update {update['State']}: {message}")
        statuses.append(Status.WARNING)
        code = code or "update_failed"
    status = worst(statuses)
    return Outcome(
        status,
        "; ".join(parts),
        details={
            "service": name,
            "id": inspected["ID"],
            "image": ((inspected["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image"),
            "update": update.get("State"),
            "failed": [{"task": t["ID"][:12], "error": _why(t)} for t in failed[:10]],
        },
        metrics={"desired": float(desired), "running": float(running), "failed_recent": float(len(failed))},
        code=code if status is not Status.OK else None,
        thresholds={"failed_recent": (float(params.warn_failures), float(params.crit_failures))},
    )


@plugins.check("swarm.nodes", NodesParams)
@_within_deadline
def nodes(ctx: CheckContext, params: NodesParams) -> Outcome:
    """The swarm's nodes: ready and active (not drained or paused), and its managers reachable."""
    client = _manager(ctx)
    if client is None:
        return _not_manager()
    rows = []
    for node in client.api.nodes():
        spec, status = node.get("Spec") or {}, node.get("Status") or {}
        manager = node.get("ManagerStatus")
        hostname = str((node.get("Description") or {}).get("Hostname") or node["ID"][:12])[:64]
        rows.append(
            {
                "node": "".join(c if c.isprintable() else "?" for c in hostname),
                "role": spec.get("Role"),
                "state": status.get("State"),
                "availability": spec.get("Availability"),
                "reachability": manager.get("Reachability") if manager else None,
            }
        )
    usable = [r for r in rows if r["state"] == "ready" and r["availability"] == "active"]
    unusable = [r for r in rows if r not in usable]
    unreachable = [r for r in rows if r["reachability"] not in (None, "reachable")]
    parts = [f"{len(usable)}/{len(rows)} nodes ready and active"]
    parts += [f"{r['node']} {r['state']}, {r['availability']}" for r in unusable[:10]]
    parts += [f"manager {r['node']} {r['reachability']}" for r in unreachable[:10]]
    if len(usable) < params.min_ready:
        status, code = Status.CRITICAL, "nodes_below_min"
    elif unusable or unreachable:
        status, code = Status.WARNING, "nodes_unavailable"
    else:
        status, code = Status.OK, None
    return Outcome(
        status,
        "; ".join(parts),
        details={"nodes": rows[:MAX_NODES_SHOWN]},
        metrics={
            "nodes": float(len(rows)),
            "ready": float(len(usable)),
            "managers_unreachable": float(len(unreachable)),
        },
        code=code,
    )
