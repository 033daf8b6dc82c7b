"""Effects on Swarm services: a forced update (rolling restart) and a server-side rollback, each only on
the service spec that was planned, each waited for until Swarm says the update completed."""

from __future__ import annotations

import time
from typing import Any

from agent.plugin_api import ApplyContext, ApplyError, EffectSet
from remediations.swarm import ForceUpdateSpec, RollbackSpec, spec_digest

effects = EffectSet("swarm")
NOTHING_TO_REPLACE = 10.0  # seconds without any update status, and no task wanted: nothing was to replace


def _as_planned(client: Any, service_id: str, digest: str, name: str) -> dict[str, Any]:
    """The service now, if its spec is still the one the plan (and its approval) saw."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    try:
        current: dict[str, Any] = client.api.inspect_service(service_id)
    except docker.errors.NotFound:
        raise ApplyError(f"swarm service {name} is gone since the plan was made") from None
    if current["Spec"].get("Name") != name or spec_digest(current["Spec"]) != digest:
        raise ApplyError(f"swarm service {name} changed since the plan was made (spec {digest}); run again")
    return current


def _update(client: Any, current: dict[str, Any], spec: dict[str, Any], name: str, *, rollback: bool = False) -> None:
    """POST /services/{id}/update with the version just read (the engine refuses it if the service
    changed in between). Called as the docker CLI calls it: docker-py's update_service rebuilds the spec
    from its own arguments and has no `rollback`."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    params: dict[str, Any] = {"version": int(current["Version"]["Index"])}
    if rollback:
        params["rollback"] = "previous"  # Swarm restores PreviousSpec itself (the body is only checked)
    try:
        url = client.api._url("/services/{0}/update", current["ID"])
        client.api._raise_for_status(client.api._post_json(url, data=spec, params=params))
    except docker.errors.APIError as exc:
        raise ApplyError(f"swarm service {name}: the engine refused the update: {exc.explanation or exc}") from None


def _wait(client: Any, service_id: str, name: str, done: str, timeout: float, before: Any) -> dict[str, Any]:
    """Until Swarm reports this update `done` (completed / rollback_completed); ApplyError if it paused,
    rolled back by itself, or is still going at the deadline. `before` is the service's UpdateStatus
    before this update: until it changes, what it says is about an earlier update (and if it never
    changes and no task is wanted, there was nothing to replace)."""
    started = time.monotonic()
    state, message = "?", ""
    while time.monotonic() - started < timeout:
        status = client.api.inspect_service(service_id).get("UpdateStatus") or {}
        if status.get("StartedAt") == (before or {}).get("StartedAt"):
            if time.monotonic() - started > NOTHING_TO_REPLACE and not client.api.tasks(
                filters={"service": service_id, "desired-state": "running"}
            ):
                return {"service": name, "update": "nothing to replace"}
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
    current = _as_planned(client, spec.service_id, spec.spec_digest, spec.name)
    body = current["Spec"]
    body.setdefault("TaskTemplate", {})["ForceUpdate"] = spec.force_update
    _update(client, current, body, spec.name)
    return _wait(client, spec.service_id, spec.name, "completed", spec.wait, current.get("UpdateStatus"))


@effects.effect("swarm.service.rollback", RollbackSpec)
def rollback(ctx: ApplyContext, spec: RollbackSpec) -> dict[str, Any]:
    client = ctx.clients.docker()
    current = _as_planned(client, spec.service_id, spec.spec_digest, spec.name)
    previous = current.get("PreviousSpec")
    if not previous or spec_digest(previous) != spec.previous_digest:
        raise ApplyError(f"swarm service {spec.name}: its previous spec is not the one planned; run again")
    _update(client, current, current["Spec"], spec.name, rollback=True)
    return _wait(client, spec.service_id, spec.name, "rollback_completed", spec.wait, current.get("UpdateStatus"))
