"""Plans of the docker remediations from inspect data alone (the read-only view a plan gets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.exceptions import PlanError
from remediations._container import blueprint, config_digest
from remediations.docker import RecreateSpec, RollbackParams, ScaleParams, _previous_image, _repository, rollback


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


def test_rollback_plan_binds_the_config_by_digest_and_shows_no_env() -> None:
    images = {
        "app:previous": image("sha-old", "2026-01-01", ["app:previous"], ["FAIL_RATIO=0"]),
        "sha-new": image("sha-new", "2026-02-01", ["app:bad"], ["FAIL_RATIO=1"]),
    }
    attrs = container("app:bad", "sha-new")
    ctx = FakeContext(FakeDocker(images, [attrs]))
    (change,) = rollback(ctx, RollbackParams(service="app"))  # type: ignore[arg-type]
    assert change.before == {"image": "app:bad", "image_id": "sha-new"}
    assert change.after == {"image": "app:previous", "image_id": "sha-old"}
    assert isinstance(change.spec, RecreateSpec) and change.spec.config_digest == config_digest(attrs)
    # The plan (what is shown, stored and approved) carries a digest of the env, never its values.
    assert "postgresql://" not in json.dumps(change.to_json()) and "FAIL_RATIO" not in json.dumps(change.to_json())
    changed = {**attrs, "Config": {**attrs["Config"], "Env": [*attrs["Config"]["Env"], "NEW=1"]}}
    assert config_digest(changed) != config_digest(attrs)


def test_blueprint_keeps_the_container_and_drops_only_what_the_old_image_gave() -> None:
    attrs = container("app:bad", "sha-new")
    old_image = {"Env": ["FAIL_RATIO=1"], "Cmd": ["app"], "Labels": {"version": "bad"}}
    attrs["Config"]["Labels"]["version"] = "bad"
    attrs["Config"]["User"] = "nobody"
    attrs["Config"]["WorkingDir"] = "/srv"
    attrs["HostConfig"].update({"Binds": ["data:/data", "/srv/conf:/conf:ro"], "CapAdd": ["NET_ADMIN"]})
    attrs["Mounts"] = [
        {"Type": "volume", "Name": "data", "Destination": "/data", "RW": True},
        {"Type": "volume", "Name": "f00d" * 16, "Destination": "/cache", "RW": True},
        {"Type": "bind", "Source": "/srv/conf", "Destination": "/conf", "RW": False},
    ]
    plan = blueprint(attrs, old_image, image="app:previous")
    body = plan.body
    assert body["Image"] == "app:previous"
    assert body["Env"] == ["DATABASE_URL=postgresql://app:pw@db/app"]  # the bad image's FAIL_RATIO=1 is gone
    assert body["Cmd"] is None and "version" not in body["Labels"]  # the new image decides these
    assert (body["User"], body["WorkingDir"]) == ("nobody", "/srv")
    host = body["HostConfig"]
    assert host["Binds"] == ["data:/data", "/srv/conf:/conf:ro"] and host["CapAdd"] == ["NET_ADMIN"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "58080"}]}
    # The anonymous volume is mounted again by name; the named one and the bind come with Binds.
    assert host["Mounts"] == [{"Type": "volume", "Source": "f00d" * 16, "Target": "/cache", "ReadOnly": False}]
    assert body["NetworkingConfig"]["EndpointsConfig"]["sandbox_default"]["Aliases"] == ["app"]
    replica = blueprint(attrs, old_image, image="app:bad", replica=("sandbox-app-2", 2)).body
    assert "Mounts" not in replica["HostConfig"] or not replica["HostConfig"]["Mounts"]  # fresh anonymous volumes
    assert replica["Labels"]["com.docker.compose.container-number"] == "2"


def test_scale_is_bounded_by_the_runbook() -> None:
    with pytest.raises(ValueError, match="above max_replicas"):
        ScaleParams(service="worker", replicas=30, max_replicas=20)


# --- Swarm services --------------------------------------------------------------------------------------


class FakeSwarm:
    def __init__(self, service: dict[str, Any] | None) -> None:
        self.service = service

    def swarm_service(self, name: str) -> dict[str, Any] | None:
        return self.service


def swarm_service(env: list[str], previous: list[str] | None = None, force: int = 0) -> dict[str, Any]:
    def spec(values: list[str]) -> dict[str, Any]:
        return {
            "Name": "worker",
            "TaskTemplate": {"ContainerSpec": {"Image": "app:v2", "Env": values}, "ForceUpdate": force},
            "Mode": {"Replicated": {"Replicas": 3}},
            "UpdateConfig": {"Parallelism": 1, "Order": "start-first"},
        }

    found: dict[str, Any] = {"ID": "svc1", "Version": {"Index": 42}, "Spec": spec(env)}
    if previous is not None:
        found["PreviousSpec"] = spec(previous)
    return found


def test_swarm_restart_plans_a_forced_update_bound_to_the_version() -> None:
    from remediations.swarm import ServiceParams, restart, spec_digest

    (change,) = restart(FakeContext(FakeSwarm(swarm_service(["A=1"], force=4))), ServiceParams(service="worker"))
    assert (change.effect, change.target, change.before, change.after) == (
        "swarm.service.force_update",
        "service:worker",
        4,
        5,
    )
    service = swarm_service(["A=1"], force=4)
    assert change.spec.spec_digest == spec_digest(service["Spec"]) and change.spec.force_update == 5
    assert change.summary == "rolling restart of swarm service worker (3 replicas, 1 at a time, start-first)"
    with pytest.raises(PlanError, match="no swarm service worker"):
        restart(FakeContext(FakeSwarm(None)), ServiceParams(service="worker"))
    # Not while an update is paused or under way: that would roll the held-back (bad) spec onto every task.
    service["UpdateStatus"] = {"State": "paused", "StartedAt": "2026-11-29T10:00:00Z"}
    with pytest.raises(PlanError, match="an update is paused"):
        restart(FakeContext(FakeSwarm(service)), ServiceParams(service="worker"))
    service["Spec"]["Mode"] = {"ReplicatedJob": {}}
    with pytest.raises(PlanError, match="is a job"):
        restart(FakeContext(FakeSwarm(service)), ServiceParams(service="worker"))


def test_swarm_rollback_names_what_differs_and_binds_the_previous_spec() -> None:
    from remediations.swarm import ServiceParams, spec_digest
    from remediations.swarm import rollback as swarm_rollback

    with pytest.raises(PlanError, match="no previous spec"):
        swarm_rollback(FakeContext(FakeSwarm(swarm_service(["A=2"]))), ServiceParams(service="worker"))
    service = swarm_service(["A=2"], previous=["A=1"])
    (change,) = swarm_rollback(FakeContext(FakeSwarm(service)), ServiceParams(service="worker"))
    assert change.summary.endswith("(same image; differs in TaskTemplate.ContainerSpec.Env)")
    assert change.spec.previous_digest == spec_digest(service["PreviousSpec"])
    assert change.spec.spec_digest == spec_digest(service["Spec"])
    # Swarm swaps the specs on a rollback: rolled back already, a second one would restore the bad release.
    service["UpdateStatus"] = {"State": "rollback_completed"}
    with pytest.raises(PlanError, match="already rolled back"):
        swarm_rollback(FakeContext(FakeSwarm(service)), ServiceParams(service="worker"))
    # The last change was a restart (or a scale): nothing to roll back.
    restarted = swarm_service(["A=2"], previous=["A=2"], force=1)
    restarted["PreviousSpec"]["TaskTemplate"]["ForceUpdate"] = 0
    restarted["PreviousSpec"]["Mode"] = {"Replicated": {"Replicas": 2}}
    with pytest.raises(PlanError, match=r"differs only in Mode, TaskTemplate\.ForceUpdate"):
        swarm_rollback(FakeContext(FakeSwarm(restarted)), ServiceParams(service="worker"))


class FakeSwarmApi:
    """inspect_service answers with the given UpdateStatus values in turn (the last one repeats)."""

    def __init__(self, statuses: list[dict[str, Any] | None], tasks: list[dict[str, Any]] | None = None) -> None:
        self.statuses, self._tasks, self.api = statuses, tasks or [], self

    def inspect_service(self, _: str) -> dict[str, Any]:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"UpdateStatus": status} if status is not None else {}

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self._tasks


def test_swarm_waits_for_this_update_and_reports_how_it_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.exceptions import ApplyError
    from remediations.effects import swarm as swarm_effects

    old = {"State": "completed", "StartedAt": "2026-11-29T09:00:00Z"}

    def new(state: str, message: str = "") -> dict[str, Any]:
        return {"State": state, "StartedAt": "2026-11-29T10:00:00Z", "Message": message}

    # Until StartedAt changes, "completed" is the earlier update's.
    done = swarm_effects._wait(
        FakeSwarmApi([old, old, new("updating"), new("completed")]), "s", "web", "completed", 10, old
    )
    assert done == {"service": "web", "update": "completed"}
    with pytest.raises(ApplyError, match="update paused: task failed"):
        swarm_effects._wait(FakeSwarmApi([new("paused", "task failed")]), "s", "web", "completed", 10, old)
    with pytest.raises(ApplyError, match="update rollback_completed"):
        swarm_effects._wait(FakeSwarmApi([new("rollback_completed")]), "s", "web", "completed", 10, old)
    with pytest.raises(ApplyError, match=r"still updating after 0\.5s"):
        swarm_effects._wait(FakeSwarmApi([new("updating")]), "s", "web", "completed", 0.5, old)
    # No status ever, and no task wanted (0 replicas, a global service on no node): nothing to replace.
    monkeypatch.setattr(swarm_effects, "NOTHING_TO_REPLACE", 0.1)
    done = swarm_effects._wait(FakeSwarmApi([None]), "s", "web", "completed", 10, None)
    assert done["update"] == "nothing to replace"


def test_a_plan_names_the_server_its_secret_reaches_without_the_secret() -> None:
    # An approval is of a plan against one Redis: the same queue on another server is another plan.
    from pydantic import SecretStr

    from agent.changes import Change, Plan, server_of
    from agent.remediate import _on_server
    from remediations.redis import FlagSpec

    def plan(url: str) -> Plan:
        spec = FlagSpec(url=SecretStr(url), key="bull:email:meta", field="paused")
        change = _on_server(Change("redis.hset", "queue:email", "pause email", spec=spec))
        return Plan("pause_queue", "redis.pause_queue", (change,))

    prod, sandbox = plan("redis://:prod-s3cret@prod-redis:6379/0"), plan("redis://:sandbox-pw@127.0.0.1:56379/0")
    assert prod.fingerprint != sandbox.fingerprint
    shown = json.dumps(prod.to_json())
    assert "pause email (on redis host=prod-redis port=6379 db=0)" in shown and "prod-s3cret" not in shown
    assert plan("redis://:other-password@prod-redis/").fingerprint == prod.fingerprint  # rotated, spelled short
    # What the client connects to, read by its own parser: a query's db or dbname wins over the path.
    assert server_of("redis://prod:6379/0?db=5") == "redis host=prod port=6379 db=5"
    assert server_of("postgresql://app:pw@db/app?dbname=other&hostaddr=10.9.9.9") == (
        "postgresql host=db hostaddr=10.9.9.9 port=5432 dbname=other user=app"
    )
    assert server_of("host=db port=5432 user=app password='s3 cr' dbname=app") == (
        "postgresql host=db port=5432 dbname=app user=app"
    )
    # Nothing of a password: escaped in a DSN, or unencoded in a URL (its parts would read as a host).
    assert server_of("host=db password='Xk9\\\n user=Qz7pL2vR' dbname=app") == "postgresql host=db port=5432 dbname=app"
    assert server_of("redis://:p@ss/word@host:6379/0") is None
    assert server_of("https://hooks.slack.com/services/T0/B0/SECRET") is None  # a path may be the credential
    assert server_of("an-opaque-token") is None
