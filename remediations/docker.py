"""Remediations on the Docker engine: restart, scale, roll back to the previous image."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.plugins import PluginSet
from checks.docker import Target

plugins = PluginSet("docker")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartParams(Target):
    wait_healthy: float = Field(60.0, gt=0, description="Seconds to wait for each container to be running/healthy.")


plugins.remediation(
    "docker.restart",
    RestartParams,
    effects=("docker.container.restart",),
    doc="Restart a container, or every container of a compose service one at a time.",
)


class ScaleParams(_Params):
    service: str = Field(description="Compose (or Swarm) service to scale.")
    project: str | None = Field(None, description="Compose project; default: the configured compose_project.")
    replicas: int = Field(ge=0, description="Replica count to set (the guide scales workers to 10).")
    max_replicas: int = Field(20, ge=1, description="Upper bound the runbook allows.")


plugins.remediation(
    "docker.scale",
    ScaleParams,
    effects=("docker.container.create", "docker.container.remove"),
    doc="Set a compose service's replica count (docker-compose up --scale service=N).",
)


class RollbackParams(Target):
    previous_tag: str = Field("previous", description="Tag of the image to roll back to (`<repo>:previous`).")


plugins.remediation(
    "docker.rollback",
    RollbackParams,
    effects=("docker.container.recreate",),
    doc="Recreate a service's containers from the previous image, keeping env, ports, networks and labels.",
)
