"""Remediations on Swarm services, through Swarm's own primitives (plans only): a rolling restart (what
`docker service update --force` does) and a rollback to the service's previous spec (`docker service
rollback`). Scaling a Swarm service is `docker.scale`. Each plan binds the service's spec (and, for a
rollback, the spec it goes back to): a service changed since it was planned (and approved) is not
touched. Swarm's own status writes (an update starting, completing) do not count as changes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from agent.plugin_api import Change, Duration, EffectSpec, Params, PlanContext, PlanError, PluginSet

plugins = PluginSet("swarm")

IN_PROGRESS = ("updating", "paused", "rollback_started", "rollback_paused")
# What a spec may differ in from the one before without that being a release to roll back: a restart
# (ForceUpdate), a scale (Mode), labels and the rollout settings.
NOT_A_RELEASE = {"TaskTemplate.ForceUpdate", "Mode", "Labels", "UpdateConfig", "RollbackConfig", "Name"}


class ServiceParams(Params):
    service: str = Field(description="Swarm service name (exactly: never an id or a prefix of one).")
    wait: Duration = Field(120.0, description="How long the update may take to complete (2m).")


class ForceUpdateSpec(EffectSpec):
    service_id: str
    name: str
    spec_digest: str  # the service's spec when planned
    force_update: int  # TaskTemplate.ForceUpdate to set: one more than it was
    wait: float


class RollbackSpec(EffectSpec):
    service_id: str
    name: str
    spec_digest: str
    previous_digest: str  # the previous spec the approval saw
    wait: float


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _service(ctx: PlanContext, name: str) -> dict[str, Any]:
    found = ctx.docker.swarm_service(name)
    if found is None:
        raise PlanError(f"no swarm service {name} (or this Docker engine is not a swarm manager)")
    mode = found["Spec"].get("Mode") or {}
    if "Replicated" not in mode and "Global" not in mode:
        raise PlanError(f"swarm service {name} is a job ({', '.join(mode) or '?'}): it is not restarted or rolled back")
    return found


def _image(spec: dict[str, Any]) -> str:
    return str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "?"))


def _replicas(spec: dict[str, Any]) -> str:
    mode = spec.get("Mode") or {}
    return str(mode["Replicated"].get("Replicas", 1)) if "Replicated" in mode else "global"


def _differs(now: dict[str, Any], then: dict[str, Any], path: str = "", depth: int = 0) -> list[str]:
    """Where two specs differ, down to the container's settings (`TaskTemplate.ContainerSpec.Env`)."""
    found = []
    for key in sorted(set(now) | set(then)):
        a, b = now.get(key), then.get(key)
        if a == b:
            continue
        if depth < 2 and key in ("TaskTemplate", "ContainerSpec") and isinstance(a, dict) and isinstance(b, dict):
            found += _differs(a, b, f"{path}{key}.", depth + 1)
        else:
            found.append(f"{path}{key}")
    return found


@plugins.remediation("swarm.restart", ServiceParams, effects={"swarm.service.force_update": ForceUpdateSpec})
def restart(ctx: PlanContext, params: ServiceParams) -> list[Change]:
    """Replace every task of a service, as its update_config says (parallelism, delay, order, failure
    action): a rolling restart by Swarm itself, never all at once unless the service is configured so.
    Not while an update is under way or paused: that would roll the paused (bad) spec onto the tasks
    Swarm held back; roll it back instead."""
    service = _service(ctx, params.service)
    spec = service["Spec"]
    state = (service.get("UpdateStatus") or {}).get("State")
    if state in IN_PROGRESS:
        raise PlanError(
            f"swarm service {params.service}: an update is {state}; restarting would roll it onto every task"
            " (swarm.rollback goes back to the spec before it)"
        )
    if _replicas(spec) == "0":
        return []  # no task to restart
    force = int((spec.get("TaskTemplate") or {}).get("ForceUpdate", 0))
    update = spec.get("UpdateConfig") or {}
    how = f"{update.get('Parallelism', 1) or 'all'} at a time, {update.get('Order', 'stop-first')}"
    return [
        Change(
            effect="swarm.service.force_update",
            target=f"service:{params.service}",
            summary=f"rolling restart of swarm service {params.service} ({_replicas(spec)} replicas, {how})",
            before=force,
            after=force + 1,
            spec=ForceUpdateSpec(
                service_id=service["ID"],
                name=params.service,
                spec_digest=spec_digest(spec),
                force_update=force + 1,
                wait=params.wait,
            ),
        )
    ]


@plugins.remediation("swarm.rollback", ServiceParams, effects={"swarm.service.rollback": RollbackSpec})
def rollback(ctx: PlanContext, params: ServiceParams) -> list[Change]:
    """Put a service back on its previous spec (the one before its last release: image, env, command...),
    as Swarm keeps it, rolled out as its rollback_config says. Only a release is rolled back: not a spec
    that is itself a rollback (Swarm swaps the two: a second rollback would restore the bad release),
    nor one whose last change was a restart or a scale."""
    service = _service(ctx, params.service)
    spec, previous = service["Spec"], service.get("PreviousSpec")
    if not previous:
        raise PlanError(f"swarm service {params.service} has no previous spec to roll back to")
    state = str((service.get("UpdateStatus") or {}).get("State") or "")
    if state.startswith("rollback_"):
        raise PlanError(f"swarm service {params.service} is already rolled back ({state}): not rolled back again")
    differs = _differs(spec, previous)
    release = [d for d in differs if d not in NOT_A_RELEASE]
    if not release:
        raise PlanError(
            f"swarm service {params.service}: its previous spec differs only in {', '.join(differs) or 'nothing'}"
            " (a restart or scale was its last change): no release to roll back"
        )
    what = f"image {_image(spec)} -> {_image(previous)}" if _image(spec) != _image(previous) else "same image"
    if _replicas(spec) != _replicas(previous):
        what += f", replicas {_replicas(spec)} -> {_replicas(previous)}"
    return [
        Change(
            effect="swarm.service.rollback",
            target=f"service:{params.service}",
            summary=f"roll back swarm service {params.service} to its previous spec ({what};"
            f" differs in {', '.join(differs)})",
            before={"image": _image(spec), "spec": spec_digest(spec)},
            after={"image": _image(previous), "spec": spec_digest(previous)},
            spec=RollbackSpec(
                service_id=service["ID"],
                name=params.service,
                spec_digest=spec_digest(spec),
                previous_digest=spec_digest(previous),
                wait=params.wait,
            ),
        )
    ]
