"""Plans of the docker remediations from inspect data alone (the read-only view a plan gets)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.exceptions import PlanError
from remediations.docker import RollbackParams, ScaleParams, _previous_image, _repository, rollback


class FakeDocker:
    def __init__(self, images: dict[str, dict[str, Any]], containers: list[dict[str, Any]]) -> None:
        self._images, self._containers = images, containers

    def image(self, ref: str) -> dict[str, Any] | None:
        return self._images.get(ref)

    def images(self, repository: str) -> list[dict[str, Any]]:
        return [i for ref, i in self._images.items() if ref.startswith(repository + ":")]

    def containers(self, **_: Any) -> list[dict[str, Any]]:
        return self._containers

    def swarm_service(self, name: str) -> None:
        return None


class FakeContext:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker
        self.settings = type("S", (), {"compose_project": "sandbox"})()


def image(image_id: str, created: str, tags: list[str], env: list[str] | None = None) -> dict[str, Any]:
    return {"Id": image_id, "Created": created, "RepoTags": tags, "Config": {"Env": env or [], "Cmd": ["app"]}}


def container(image_ref: str, image_id: str) -> dict[str, Any]:
    return {
        "Id": "c" * 64,
        "Name": "/sandbox-app-1",
        "Image": image_id,
        "State": {"Status": "running"},
        "Config": {
            "Image": image_ref,
            "Cmd": ["app"],
            "Env": ["FAIL_RATIO=1", "DATABASE_URL=postgresql://app:pw@db/app"],
            "Labels": {"com.docker.compose.service": "app"},
            "Healthcheck": None,
        },
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "58080"}]}},
        "NetworkSettings": {"Networks": {"sandbox_default": {"Aliases": ["app", "cccccccccccc"]}}},
    }


def test_repository_of_an_image_reference() -> None:
    assert _repository("app:latest") == "app"
    assert _repository("registry:5000/team/app:v2") == "registry:5000/team/app"
    assert _repository("registry:5000/team/app") == "registry:5000/team/app"
    assert _repository("app@sha256:abc") == "app"


def test_previous_tag_wins() -> None:
    docker = FakeDocker(
        {
            "app:previous": image("sha-old", "2026-01-01", ["app:previous"]),
            "sha-new": image("sha-new", "2026-02-01", ["app:bad"]),
        },
        [],
    )
    assert _previous_image(FakeContext(docker), container("app:bad", "sha-new"), "previous") == (
        "app:previous",
        "sha-old",
    )


def test_without_the_tag_the_newest_older_image_of_the_repository() -> None:
    images = {
        "app:v1": image("sha-1", "2026-01-01", ["app:v1"]),
        "app:v2": image("sha-2", "2026-01-15", ["app:v2"]),
        "app:v3": image("sha-3", "2026-02-01", ["app:v3"]),
        "sha-3": image("sha-3", "2026-02-01", ["app:v3"]),
    }
    ctx = FakeContext(FakeDocker(images, []))
    assert _previous_image(ctx, container("app:v3", "sha-3"), "previous") == ("app:v2", "sha-2")
    with pytest.raises(PlanError, match="no previous image"):
        _previous_image(ctx, container("app:v1", "sha-1"), "previous")


def test_rollback_keeps_the_containers_settings_but_not_the_old_images_env() -> None:
    images = {
        "app:previous": image("sha-old", "2026-01-01", ["app:previous"], ["FAIL_RATIO=0"]),
        "sha-new": image("sha-new", "2026-02-01", ["app:bad"], ["FAIL_RATIO=1"]),
    }
    ctx = FakeContext(FakeDocker(images, [container("app:bad", "sha-new")]))
    (change,) = rollback(ctx, RollbackParams(service="app"))  # type: ignore[arg-type]
    assert change.before == {"image": "app:bad", "image_id": "sha-new"}
    assert change.after == {"image": "app:previous", "image_id": "sha-old"}
    assert change.spec["environment"] == ["DATABASE_URL=postgresql://app:pw@db/app"]
    assert change.spec["ports"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "58080"}]}
    assert change.spec["networks"] == {"sandbox_default": ["app"]}
    assert change.spec["command"] is None  # the image's default command: the new image decides


def test_scale_is_bounded_by_the_runbook() -> None:
    with pytest.raises(ValueError, match="above max_replicas"):
        ScaleParams(service="worker", replicas=30, max_replicas=20)
