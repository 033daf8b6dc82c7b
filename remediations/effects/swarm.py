"""Effects on Swarm services: a forced update (rolling restart) and a server-side rollback, each only on
the service version that was planned, each waited for until Swarm says the update completed."""

from __future__ import annotations

import time
from typing import Any

from agent.plugin_api import ApplyContext, ApplyError, EffectSet
from remediations.swarm import ForceUpdateSpec, RollbackSpec, spec_digest

effects = EffectSet("swarm")


def _as_planned(client: Any, service_id: str, version: int, name: str) -> dict[str, Any]:
    """The service now, if it is still the version the plan (and its approval) saw."""
    current: dict[str, Any] = client.api.inspect_service(service_id)
    if int(current["Version"]["Index"]) != version:
        raise ApplyError(f"swarm service {name} changed since the plan was made (version {version}); run again")
    return current


def _update(client: Any, service_id: str, version: int, spec: dict[str, Any], *, rollback: bool = False) -> None:
    """POST /services/{id}/update: the spec as given (docker-py's update_service rebuilds it from its own
    arguments and has no `rollback`, so the engine's endpoint is called as the docker CLI calls it)."""
    params: dict[str, Any] = {"version": version}
    if rollback:
        params["rollback"] = "previous"  # Swarm restores PreviousSpec itself; the body is ignored
    response = client.api._post_json(client.api._url("/services/{0}/update", service_id), data=spec, params=params)
    client.api._raise_for_status(response)


def _wait(client: Any, service_id: str, name: str, done: str, timeout: float, before: Any) -> dict[str, Any]:
    """Until Swarm reports this update `done` (completed / rollback_completed); ApplyError if it paused,
    rolled back by itself, or is still going at the deadline. `before` is the service's UpdateStatus
    before this update: until it changes, what it says is about an earlier update."""
    started = time.monotonic()
    state, message = "?", ""
    while time.monotonic() - started < timeout:
        status = client.api.inspect_service(service_id).get("UpdateStatus") or {}
        if status.get("StartedAt") == (before or {}).get("StartedAt"):
            time.sleep(0.2)
            continue
        state, message = status.get("State", "?"), str(status.get("Message", ""))[:200]
        if state == done:
            return {"service": name, "update": state}
        if state in ("paused", "rollback_paused") or (state == "rollback_completed" and done != state):
            raise ApplyError(f"swarm service {name}: update {state}: {message}")
        time.sleep(0.5)
    raise ApplyError(f"swarm service {name}: update still {state} after {timeout:g}s: {message}")


@effects.effect("swarm.service.force_update", ForceUpdateSpec)
def force_update(ctx: ApplyContext, spec: ForceUpdateSpec) -> dict[str, Any]:
    client = ctx.clients.docker()
    current = _as_planned(client, spec.service_id, spec.version, spec.name)
    body = current["Spec"]
    body.setdefault("TaskTemplate", {})["ForceUpdate"] = spec.force_update
    _update(client, spec.service_id, spec.version, body)
    return _wait(client, spec.service_id, spec.name, "completed", spec.wait, current.get("UpdateStatus"))


@effects.effect("swarm.service.rollback", RollbackSpec)
def rollback(ctx: ApplyContext, spec: RollbackSpec) -> dict[str, Any]:
    client = ctx.clients.docker()
    current = _as_planned(client, spec.service_id, spec.version, spec.name)
    previous = current.get("PreviousSpec")
    if not previous or spec_digest(previous) != spec.previous_digest:
        raise ApplyError(f"swarm service {spec.name}: its previous spec is not the one planned; run again")
    _update(client, spec.service_id, spec.version, current["Spec"], rollback=True)
    return _wait(client, spec.service_id, spec.name, "rollback_completed", spec.wait, current.get("UpdateStatus"))
