"""Checks of Docker Swarm, through the manager's own API: a service's tasks (desired against running,
recent failures and why, a stalled update) and the nodes (ready, available, managers reachable)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from pydantic import Field

from agent.plugin_api import CheckContext, Duration, Outcome, Params, PluginSet, Status, above, worst
from checks.docker import _within_deadline

plugins = PluginSet("swarm")

MAX_TASKS = 1000  # tasks of one service looked at (the newest): a service that crash-loops keeps history
MAX_MESSAGE = 200  # characters of a task's error shown


class ServiceParams(Params):
    service: str = Field(description="Swarm service name (or id).")
    window: Duration = Field(600.0, description="Task failures this recent count (10m).")
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
    """A task's timestamp (RFC 3339 with nanoseconds) as a Unix time."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*Z$", str(raw or ""))
    if not match or str(raw).startswith("0001-"):
        return None
    return datetime.fromisoformat(match.group(1) + (match.group(2) or "") + "+00:00").timestamp()


def _why(task: dict[str, Any]) -> str:
    status = task.get("Status") or {}
    text = status.get("Err") or status.get("Message") or status.get("State") or "?"
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    shown = f"{text} (exit {code})" if code not in (None, 0) and "exit" not in str(text) else str(text)
    return "".join(c if c.isprintable() else "?" for c in shown[:MAX_MESSAGE])


@plugins.check("swarm.service", ServiceParams)
@_within_deadline
def service(ctx: CheckContext, params: ServiceParams) -> Outcome:
    """A Swarm service: tasks running against desired, tasks failed recently (and the last error), tasks
    the scheduler cannot place (and why), and an update that paused."""
    import docker.errors

    client = _manager(ctx)
    if client is None:
        return _not_manager()
    try:
        inspected = client.api.inspect_service(params.service)
    except docker.errors.NotFound:
        return Outcome(Status.CRITICAL, f"no swarm service {params.service}", code="service_missing")
    name = inspected["Spec"].get("Name", params.service)
    tasks = client.api.tasks(filters={"service": inspected["ID"]})
    tasks.sort(key=lambda t: str(t.get("UpdatedAt", "")), reverse=True)
    tasks = tasks[:MAX_TASKS]
    wanted = [t for t in tasks if t.get("DesiredState") == "running"]
    running = [t for t in wanted if (t.get("Status") or {}).get("State") == "running"]
    mode = inspected["Spec"].get("Mode") or {}
    desired = int(mode["Replicated"].get("Replicas", 1)) if "Replicated" in mode else len(wanted)
    since = time.time() - params.window
    failed = [
        t
        for t in tasks
        if (t.get("Status") or {}).get("State") in ("failed", "rejected")
        and (_epoch((t.get("Status") or {}).get("Timestamp")) or 0) >= since
    ]
    waiting = [t for t in wanted if (t.get("Status") or {}).get("State") in ("pending", "assigned", "preparing")]

    statuses = [Status.OK]
    parts = [f"{name}: {len(running)}/{desired} tasks running"]
    code = None
    if len(running) < desired:
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
    if update.get("State") in ("paused", "rollback_paused"):
        parts.append(f"update {update['State']}: {str(update.get('Message', ''))[:MAX_MESSAGE]}")
        statuses.append(Status.WARNING)
        code = code or "update_paused"
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
        metrics={"desired": float(desired), "running": float(len(running)), "failed_recent": float(len(failed))},
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
        rows.append(
            {
                "node": (node.get("Description") or {}).get("Hostname") or node["ID"][:12],
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
        details={"nodes": rows},
        metrics={
            "nodes": float(len(rows)),
            "ready": float(len(usable)),
            "managers_unreachable": float(len(unreachable)),
        },
        code=code,
    )
