"""Effects on the Docker engine: restart, create, remove, recreate containers; scale a Swarm service."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from agent.plugin_api import ApplyContext, ApplyError, EffectSet
from remediations._container import Blueprint, blueprint, config_digest
from remediations.docker import CreateReplicaSpec, RecreateSpec, RemoveSpec, RestartSpec, ServiceScaleSpec

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


@effects.effect("docker.container.restart", RestartSpec)
def restart(ctx: ApplyContext, spec: RestartSpec) -> dict[str, Any]:
    container = ctx.clients.docker().containers.get(spec.id)
    container.restart(timeout=STOP_TIMEOUT)
    return wait_running(container, spec.wait_healthy)


def _as_planned(client: Any, container_id: str, digest: str, name: str) -> dict[str, Any]:
    """The container's inspect data now, if it is still what the plan (and its approval) saw."""
    attrs: dict[str, Any] = client.api.inspect_container(container_id)
    now = config_digest(attrs)
    if now != digest:
        raise ApplyError(f"{name} changed since the plan was made (config {now}, planned {digest}); run again")
    return attrs


def _create(client: Any, plan: Blueprint, name: str) -> Any:
    """Create (not start) a container from a blueprint, on all its networks; nothing is left behind if
    that fails partway."""
    created = client.api.create_container_from_config(plan.body, name=name)
    try:
        for network, endpoint in plan.more_networks.items():
            ipam = endpoint.get("IPAMConfig") or {}
            client.api.connect_container_to_network(
                created["Id"],
                network,
                aliases=endpoint.get("Aliases"),
                ipv4_address=ipam.get("IPv4Address"),
                ipv6_address=ipam.get("IPv6Address"),
                link_local_ips=ipam.get("LinkLocalIPs"),
                driver_opt=endpoint.get("DriverOpts"),
            )
        return client.containers.get(created["Id"])
    except Exception:
        client.api.remove_container(created["Id"], force=True)  # not v: its volumes may be another's
        raise


def _image_of(client: Any, attrs: dict[str, Any]) -> str:
    """The container's very image: its reference if that still names it, else its id."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    ref = str(attrs["Config"]["Image"])
    try:
        return ref if client.api.inspect_image(ref)["Id"] == attrs["Image"] else str(attrs["Image"])
    except docker.errors.ImageNotFound:
        return str(attrs["Image"])


@effects.effect("docker.container.create", CreateReplicaSpec)
def create(ctx: ApplyContext, spec: CreateReplicaSpec) -> dict[str, Any]:
    client = ctx.clients.docker()
    template = _as_planned(client, spec.template_id, spec.config_digest, spec.name)
    image_config = client.api.inspect_image(template["Image"])["Config"]
    plan = blueprint(template, image_config, image=_image_of(client, template), replica=(spec.name, spec.number))
    container = _create(client, plan, spec.name)
    try:
        container.start()
        result = wait_running(container, spec.wait_healthy)
    except Exception:
        container.remove(force=True, v=True)  # a replica that never came up: nothing of it is kept
        raise
    return {"created": container.name, "id": container.id[:12], **result}


@effects.effect("docker.container.remove", RemoveSpec)
def remove(ctx: ApplyContext, spec: RemoveSpec) -> dict[str, Any]:
    container = ctx.clients.docker().containers.get(spec.id)
    container.stop(timeout=STOP_TIMEOUT)
    container.remove()
    return {"removed": spec.name}


@effects.effect("docker.container.recreate", RecreateSpec)
def recreate(ctx: ApplyContext, spec: RecreateSpec) -> dict[str, Any]:
    """Replace a container by one from another image, built from the old one's full inspect data; if the
    new one does not come up, the old one is put back."""
    client = ctx.clients.docker()
    attrs = _as_planned(client, spec.id, spec.config_digest, spec.name)
    target = client.api.inspect_image(spec.image)
    if target["Id"] != spec.image_id:
        raise ApplyError(f"{spec.image} now names another image than the one planned; run again")
    plan = blueprint(attrs, client.api.inspect_image(attrs["Image"])["Config"], image=spec.image)
    old = client.containers.get(spec.id)
    new = None
    try:
        old.stop(timeout=STOP_TIMEOUT)
        old.rename(f"{spec.name}-replaced-{int(time.time())}")
        new = _create(client, plan, spec.name)
        new.start()
        result = wait_running(new, spec.wait_healthy)
    except Exception:
        _put_back(client, old, new, spec.name)
        raise
    old.remove()  # not v: its anonymous volumes now belong to the new container
    return {"container": spec.name, "id": new.id[:12], "image": spec.image, **result}


def _put_back(client: Any, old: Any, new: Any, name: str) -> None:
    """The new container did not come up: remove it, and run the old one under its own name again. Each
    step is tried even if one before it failed: the service must not be left down."""
    if new is not None:
        with contextlib.suppress(Exception):
            new.remove(force=True)  # not v: the anonymous volumes are the old container's, kept
    try:
        old.reload()
        if old.name != name:
            old.rename(name)
    finally:
        old.start()


@effects.effect("docker.service.scale", ServiceScaleSpec)
def scale_service(ctx: ApplyContext, spec: ServiceScaleSpec) -> dict[str, Any]:
    service = ctx.clients.docker().services.get(spec.service_id)
    service.scale(spec.replicas)
    return {"service": spec.name, "replicas": spec.replicas}
