"""Effects on the Docker engine: restart, create, remove, recreate containers; scale a Swarm service."""

from __future__ import annotations

import time
from typing import Any

from agent.changes import Change
from agent.context import ApplyContext
from agent.exceptions import ApplyError
from agent.plugins import EffectSet

effects = EffectSet("docker")
STOP_TIMEOUT = 10


def wait_running(container: Any, timeout: float) -> dict[str, Any]:
    """Until the container is running, and healthy if it has a health check; ApplyError otherwise."""
    started = time.monotonic()
    state: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if state["Status"] == "running" and health in (None, "healthy"):
            return {"state": "running", "health": health}
        if state["Status"] in ("exited", "dead") and time.monotonic() - started > 2:
            break  # it died again: no point waiting out the deadline
        time.sleep(0.5)
    health = (state.get("Health") or {}).get("Status")
    raise ApplyError(
        f"{container.name} not healthy: {state.get('Status')}"
        + (f", health {health}" if health else "")
        + (f", exit code {state.get('ExitCode')}" if state.get("Status") == "exited" else "")
    )


@effects.effect("docker.container.restart")
def restart(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    container = ctx.clients.docker().containers.get(change.spec["id"])
    container.restart(timeout=STOP_TIMEOUT)
    return wait_running(container, change.spec["wait_healthy"])


def _ports(bindings: dict[str, Any]) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    for port, binds in bindings.items():
        pairs = [(b.get("HostIp") or "0.0.0.0", int(b["HostPort"])) for b in binds or [] if b.get("HostPort")]  # noqa: S104
        ports[port] = pairs[0] if len(pairs) == 1 else pairs
    return ports


def create_container(ctx: ApplyContext, spec: dict[str, Any]) -> Any:
    """A container from a plan's spec (image, command, env, labels, networks with aliases, limits)."""
    client = ctx.clients.docker()
    networks = spec.get("networks") or {}
    first = next(iter(networks), None)
    kwargs: dict[str, Any] = {
        "name": spec["name"],
        "command": spec.get("command"),
        "entrypoint": spec.get("entrypoint"),
        "environment": spec.get("environment"),
        "labels": spec.get("labels"),
        "healthcheck": spec.get("healthcheck"),
        "ports": _ports(spec.get("ports") or {}),
        "detach": True,
    }
    if spec.get("restart_policy") and spec["restart_policy"].get("Name"):
        kwargs["restart_policy"] = spec["restart_policy"]
    if spec.get("mem_limit"):
        kwargs["mem_limit"] = spec["mem_limit"]
    if first is not None:
        kwargs["network"] = first
        kwargs["networking_config"] = {first: client.api.create_endpoint_config(aliases=networks[first] or None)}
    container = client.containers.create(spec["image"], **kwargs)
    for name, aliases in list(networks.items())[1:]:
        client.networks.get(name).connect(container, aliases=aliases or None)
    return container


@effects.effect("docker.container.create")
def create(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    container = create_container(ctx, change.spec)
    container.start()
    return {"created": container.name, "id": container.id[:12], **wait_running(container, 60)}


@effects.effect("docker.container.remove")
def remove(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    container = ctx.clients.docker().containers.get(change.spec["id"])
    container.stop(timeout=STOP_TIMEOUT)
    container.remove()
    return {"removed": change.spec["name"]}


@effects.effect("docker.container.recreate")
def recreate(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    """Replace a container by one from another image; if the new one does not come up, put the old back."""
    client = ctx.clients.docker()
    old = client.containers.get(change.spec["id"])
    name = change.spec["name"]
    old.stop(timeout=STOP_TIMEOUT)
    old.rename(f"{name}-replaced-{int(time.time())}")
    new = None
    try:
        new = create_container(ctx, change.spec)
        new.start()
        result = wait_running(new, change.spec["wait_healthy"])
    except Exception:
        if new is not None:
            new.remove(force=True)
        old.rename(name)
        old.start()
        raise
    old.remove()
    return {"container": name, "id": new.id[:12], "image": change.spec["image"], **result}


@effects.effect("docker.service.scale")
def scale_service(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    service = ctx.clients.docker().services.get(change.spec["service_id"])
    service.scale(change.spec["replicas"])
    return {"service": change.spec["name"], "replicas": change.spec["replicas"]}
