"""Remediations on the Docker engine: restart, scale, roll back to the previous image (plans only)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from agent.plugin_api import Change, Duration, EffectSpec, Params, PlanContext, PlanError, PluginSet
from checks.docker import Target
from remediations._container import NUMBER_LABEL, config_digest, volumes_kept

plugins = PluginSet("docker")

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


# --- what each effect is handed -------------------------------------------------------------------------


class RestartSpec(EffectSpec):
    id: str
    name: str
    wait_healthy: float


class RecreateSpec(EffectSpec):
    """Replace container `id` by one from `image` (which must still be `image_id`), built from the old
    container's inspect data as it was when planned (`config_digest`)."""

    id: str
    name: str
    image: str
    image_id: str
    config_digest: str
    wait_healthy: float


class CreateReplicaSpec(EffectSpec):
    """A new replica like container `template_id` (as it was when planned: `config_digest`)."""

    template_id: str
    name: str
    number: int
    config_digest: str
    wait_healthy: float


class RemoveSpec(EffectSpec):
    id: str
    name: str


class ServiceScaleSpec(EffectSpec):
    service_id: str
    name: str
    replicas: int


# --- targets ---------------------------------------------------------------------------------------------


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
    """The containers a remediation acts on: a compose service's, or one named container that must belong
    to the compose project too (a runbook acts on its project, never on any container of the host)."""
    project = _project(ctx, target.project)
    if target.container is None:
        return _service_containers(ctx, project, str(target.service))
    found = ctx.docker.containers(name=target.container)
    for attrs in found:
        if (attrs["Config"].get("Labels") or {}).get(PROJECT_LABEL) != project:
            raise PlanError(f"container {target.container} is not in compose project {project}: not acted on")
    return found


def _name(attrs: dict[str, Any]) -> str:
    return str(attrs["Name"]).lstrip("/")


# --- restart -----------------------------------------------------------------------------------------------


class RestartParams(Target):
    wait_healthy: Duration = Field(60.0, description="Wait for each container to be healthy, e.g. 90s.")


@plugins.remediation("docker.restart", RestartParams, effects={"docker.container.restart": RestartSpec})
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
                spec=RestartSpec(id=attrs["Id"], name=name, wait_healthy=params.wait_healthy),
            )
        )
    if not changes:
        raise PlanError(f"no container found for {params.container or params.service}")
    return changes


# --- scale ---------------------------------------------------------------------------------------------------


class ScaleParams(Params):
    service: str = Field(description="Compose (or Swarm) service to scale.")
    project: str | None = Field(None, description="Compose project; default: the configured compose_project.")
    replicas: int = Field(ge=0, description="Replica count to set (the guide scales workers to 10).")
    max_replicas: int = Field(20, ge=1, description="Upper bound the runbook allows.")
    wait_healthy: Duration = Field(60.0, description="Wait for each new replica to be healthy, e.g. 1m30s.")

    @model_validator(mode="after")
    def _bounded(self) -> ScaleParams:
        if self.replicas > self.max_replicas:
            raise ValueError(f"replicas {self.replicas} is above max_replicas {self.max_replicas}")
        return self


def _kept(attrs: dict[str, Any]) -> str:
    """What a recreate keeps, in a few words for the plan (its exact config is in the digest)."""
    config, host = attrs["Config"], attrs.get("HostConfig") or {}
    mounts = len(host.get("Binds") or []) + len(host.get("Mounts") or []) + len(volumes_kept(attrs))
    networks = ", ".join((attrs.get("NetworkSettings") or {}).get("Networks") or {}) or "none"
    user = config.get("User") or "image default"
    return f"config {config_digest(attrs)}: {mounts} mounts, user {user}, networks {networks}"


@plugins.remediation(
    "docker.scale",
    ScaleParams,
    effects={
        "docker.container.create": CreateReplicaSpec,
        "docker.container.remove": RemoveSpec,
        "docker.service.scale": ServiceScaleSpec,
    },
)
def scale(ctx: PlanContext, params: ScaleParams) -> list[Change]:
    """Set a service's replica count: a Swarm service through the service API, a compose service by
    creating containers exactly like the first one (next numbers) or removing the highest-numbered."""
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
                spec=ServiceScaleSpec(service_id=swarm["ID"], name=params.service, replicas=params.replicas),
            )
        ]
    containers = [a for a in _service_containers(ctx, project, params.service) if a["State"]["Status"] == "running"]
    if not containers:
        raise PlanError(f"service {params.service} has no running container to copy")
    current, target = len(containers), f"service:{project}/{params.service}"
    changes = []
    if params.replicas > current:
        template = containers[0]
        if any((template.get("HostConfig") or {}).get("PortBindings") or {}):
            raise PlanError(f"service {params.service} publishes host ports; replicas would conflict")
        next_number = max(_number(a) for a in _service_containers(ctx, project, params.service)) + 1
        for number in range(next_number, next_number + params.replicas - current):
            name = f"{project}-{params.service}-{number}"
            changes.append(
                Change(
                    effect="docker.container.create",
                    target=target,
                    summary=f"create {name} like {_name(template)} ({_kept(template)};"
                    f" replicas {current} -> {params.replicas})",
                    before=None,
                    after=name,
                    spec=CreateReplicaSpec(
                        template_id=template["Id"],
                        name=name,
                        number=number,
                        config_digest=config_digest(template),
                        wait_healthy=params.wait_healthy,
                    ),
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
                    spec=RemoveSpec(id=attrs["Id"], name=_name(attrs)),
                )
            )
    return changes


# --- rollback -------------------------------------------------------------------------------------------------


class RollbackParams(Target):
    previous_tag: str = Field("previous", description="Tag of the image to roll back to (`<repo>:previous`).")
    wait_healthy: Duration = Field(60.0, description="Wait for the new container to be healthy, e.g. 2m.")


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


@plugins.remediation("docker.rollback", RollbackParams, effects={"docker.container.recreate": RecreateSpec})
def rollback(ctx: PlanContext, params: RollbackParams) -> list[Change]:
    """Recreate a service's containers from the previous image (the guide's `app:previous`), keeping
    everything else of each container — environment, volumes (named and anonymous), binds, user, working
    dir, ports, networks, labels, limits, capabilities — except what the old image itself gave it."""
    changes = []
    for attrs in _targets(ctx, params):
        name = _name(attrs)
        host = attrs.get("HostConfig") or {}
        if host.get("VolumesFrom"):
            raise PlanError(f"{name} mounts volumes_from another container: not recreated (they would mount twice)")
        if host.get("AutoRemove"):
            raise PlanError(f"{name} was started with --rm: stopping it would delete it, so it cannot be put back")
        ref, image_id = _previous_image(ctx, attrs, params.previous_tag)
        changes.append(
            Change(
                effect="docker.container.recreate",
                target=f"container:{name}",
                summary=f"recreate {name} from {ref} (was {attrs['Config']['Image']}), keeping {_kept(attrs)}",
                before={"image": attrs["Config"]["Image"], "image_id": attrs["Image"]},
                after={"image": ref, "image_id": image_id},
                spec=RecreateSpec(
                    id=attrs["Id"],
                    name=name,
                    image=ref,
                    image_id=image_id,
                    config_digest=config_digest(attrs),
                    wait_healthy=params.wait_healthy,
                ),
            )
        )
    if not changes:
        raise PlanError(f"no container found for {params.container or params.service}")
    return changes
