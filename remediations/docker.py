"""Remediations on the Docker engine: restart, scale, roll back to the previous image (plans only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.changes import Change
from agent.context import PlanContext
from agent.exceptions import PlanError
from agent.plugins import PluginSet
from checks.docker import Target

plugins = PluginSet("docker")

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"


def _project(ctx: PlanContext, project: str | None) -> str:
    return project or ctx.settings.compose_project


def _number(attrs: dict[str, Any]) -> int:
    try:
        return int(attrs["Config"]["Labels"].get(NUMBER_LABEL, 0))
    except (TypeError, ValueError):
        return 0


def _service_containers(ctx: PlanContext, project: str, service: str) -> list[dict[str, Any]]:
    found = ctx.docker.containers(labels=[f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"])
    return sorted(found, key=lambda a: (_number(a), a["Name"]))


def _targets(ctx: PlanContext, target: Target) -> list[dict[str, Any]]:
    if target.container is not None:
        return ctx.docker.containers(name=target.container)
    return _service_containers(ctx, _project(ctx, target.project), str(target.service))


def _name(attrs: dict[str, Any]) -> str:
    return str(attrs["Name"]).lstrip("/")


class RestartParams(Target):
    wait_healthy: float = Field(60.0, gt=0, description="Seconds to wait for each container to be running/healthy.")


@plugins.remediation("docker.restart", RestartParams, effects=("docker.container.restart",))
def restart(ctx: PlanContext, params: RestartParams) -> list[Change]:
    """Restart a container, or every container of a compose service one at a time (each must be
    running, and healthy if it has a health check, before the next)."""
    changes = []
    for attrs in _targets(ctx, params):
        state = attrs["State"]
        name = _name(attrs)
        was = state["Status"] + (f" (exit {state.get('ExitCode')})" if state["Status"] == "exited" else "")
        changes.append(
            Change(
                effect="docker.container.restart",
                target=f"container:{name}",
                summary=f"restart container {name} ({attrs['Id'][:12]}): {was} -> running",
                before=state["Status"],
                after="running",
                spec={"id": attrs["Id"], "name": name, "wait_healthy": params.wait_healthy},
            )
        )
    if not changes:
        raise PlanError(f"no container found for {params.container or params.service}")
    return changes


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(description="Compose (or Swarm) service to scale.")
    project: str | None = Field(None, description="Compose project; default: the configured compose_project.")
    replicas: int = Field(ge=0, description="Replica count to set (the guide scales workers to 10).")
    max_replicas: int = Field(20, ge=1, description="Upper bound the runbook allows.")

    @model_validator(mode="after")
    def _bounded(self) -> ScaleParams:
        if self.replicas > self.max_replicas:
            raise ValueError(f"replicas {self.replicas} is above max_replicas {self.max_replicas}")
        return self


def _replica_config(template: dict[str, Any], image_env: list[str]) -> dict[str, Any]:
    """The settings a new replica copies from an existing one (compose would use the service definition)."""
    config, host = template["Config"], template["HostConfig"]
    networks = template["NetworkSettings"]["Networks"]
    return {
        "image": config["Image"],
        "command": config.get("Cmd"),
        "entrypoint": config.get("Entrypoint"),
        # Only what the container added to its image's environment, so the image's own values stay its own.
        "environment": [e for e in config.get("Env") or [] if e not in image_env],
        "labels": dict(config.get("Labels") or {}),
        "healthcheck": config.get("Healthcheck"),
        # Aliases, less the template's own container-id alias that Docker adds to every container.
        "networks": {
            n: [a for a in (v or {}).get("Aliases") or [] if a != template["Id"][:12]] for n, v in networks.items()
        },
        "restart_policy": host.get("RestartPolicy"),
        "mem_limit": host.get("Memory") or None,
    }


@plugins.remediation(
    "docker.scale", ScaleParams, effects=("docker.container.create", "docker.container.remove", "docker.service.scale")
)
def scale(ctx: PlanContext, params: ScaleParams) -> list[Change]:
    """Set a service's replica count: a Swarm service through the service API, a compose service by
    creating containers like the existing ones (next numbers) or removing the highest-numbered."""
    project = _project(ctx, params.project)
    swarm = ctx.docker.swarm_service(params.service)
    if swarm is not None:
        current = int(swarm["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas", 0))
        if current == params.replicas:
            return []
        return [
            Change(
                effect="docker.service.scale",
                target=f"service:{params.service}",
                summary=f"scale swarm service {params.service}: {current} -> {params.replicas} replicas",
                before=current,
                after=params.replicas,
                spec={"service_id": swarm["ID"], "name": params.service, "replicas": params.replicas},
            )
        ]
    containers = [a for a in _service_containers(ctx, project, params.service) if a["State"]["Status"] == "running"]
    if not containers:
        raise PlanError(f"service {params.service} has no running container to copy")
    current, target = len(containers), f"service:{project}/{params.service}"
    changes = []
    if params.replicas > current:
        template = containers[0]
        if any(template["HostConfig"].get("PortBindings") or {}):
            raise PlanError(f"service {params.service} publishes host ports; replicas would conflict")
        image = ctx.docker.image(template["Image"]) or {"Config": {"Env": []}}
        config = _replica_config(template, list(image["Config"].get("Env") or []))
        next_number = max(_number(a) for a in _service_containers(ctx, project, params.service)) + 1
        for number in range(next_number, next_number + params.replicas - current):
            name = f"{project}-{params.service}-{number}"
            labels = {**config["labels"], NUMBER_LABEL: str(number)}
            changes.append(
                Change(
                    effect="docker.container.create",
                    target=target,
                    summary=f"create {name} like {_name(template)} (replicas {current} -> {params.replicas})",
                    before=None,
                    after=name,
                    spec={**config, "labels": labels, "name": name},
                )
            )
    else:
        for attrs in sorted(containers, key=_number, reverse=True)[: current - params.replicas]:
            changes.append(
                Change(
                    effect="docker.container.remove",
                    target=target,
                    summary=f"remove {_name(attrs)} (replicas {current} -> {params.replicas})",
                    before=_name(attrs),
                    after=None,
                    spec={"id": attrs["Id"], "name": _name(attrs)},
                )
            )
    return changes


class RollbackParams(Target):
    previous_tag: str = Field("previous", description="Tag of the image to roll back to (`<repo>:previous`).")
    wait_healthy: float = Field(60.0, gt=0, description="Seconds to wait for the new container to be healthy.")


def _repository(image_ref: str) -> str:
    # registry:5000/app:tag -> registry:5000/app ; app@sha256:... -> app
    ref = image_ref.split("@", 1)[0]
    head, _, tail = ref.rpartition(":")
    return head if head and "/" not in tail else ref


def _previous_image(ctx: PlanContext, attrs: dict[str, Any], tag: str) -> tuple[str, str]:
    """(reference, image id) to roll back to: `<repo>:<tag>` if it exists and differs, else the newest
    image of the same repository created before the current one."""
    current_id, ref = attrs["Image"], attrs["Config"]["Image"]
    repo = _repository(ref)
    tagged = ctx.docker.image(f"{repo}:{tag}")
    if tagged is not None and tagged["Id"] != current_id:
        return f"{repo}:{tag}", str(tagged["Id"])
    current = ctx.docker.image(current_id)
    created = current["Created"] if current else ""
    older = [i for i in ctx.docker.images(repo) if i["Id"] != current_id and i["Created"] < created]
    if not older:
        raise PlanError(f"no previous image for {repo}: no {repo}:{tag} and no older image of {repo}")
    best = max(older, key=lambda i: i["Created"])
    refs = [t for t in best.get("RepoTags") or [] if t.startswith(repo + ":")]
    return (refs[0] if refs else str(best["Id"])), str(best["Id"])


@plugins.remediation("docker.rollback", RollbackParams, effects=("docker.container.recreate",))
def rollback(ctx: PlanContext, params: RollbackParams) -> list[Change]:
    """Recreate a service's containers from the previous image (the guide's `app:previous`), keeping
    their environment, ports, networks, labels and limits; the image rolled back from is recorded."""
    changes = []
    for attrs in _targets(ctx, params):
        name = _name(attrs)
        ref, image_id = _previous_image(ctx, attrs, params.previous_tag)
        current_image = ctx.docker.image(attrs["Image"]) or {"Config": {"Env": []}}
        config = _replica_config(attrs, list(current_image["Config"].get("Env") or []))
        config["image"] = ref
        config["ports"] = attrs["HostConfig"].get("PortBindings") or {}
        # A command equal to the old image's default is the image's, not the container's: let the new image decide.
        if config["command"] == current_image["Config"].get("Cmd"):
            config["command"] = None
        changes.append(
            Change(
                effect="docker.container.recreate",
                target=f"container:{name}",
                summary=f"recreate {name} from {ref} (was {attrs['Config']['Image']})",
                before={"image": attrs["Config"]["Image"], "image_id": attrs["Image"]},
                after={"image": ref, "image_id": image_id},
                spec={**config, "id": attrs["Id"], "name": name, "wait_healthy": params.wait_healthy},
            )
        )
    if not changes:
        raise PlanError(f"no container found for {params.container or params.service}")
    return changes
