"""Rollback and scale recreate containers the way Compose does: everything the engine reports for the old
container is kept (volumes named and anonymous, binds, user, working dir, capabilities, limits, DNS...),
and an inspection before and after differs only where it must."""

from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount, Ulimit

from sandbox import stack
from tests.integration.conftest import run_runbook

pytestmark = pytest.mark.integration
PROJECT = "rbtest-keep"
NETWORK = f"{PROJECT}_default"
BACK = f"{PROJECT}_back"
# Subnets of their own, outside Docker's default pools (172.17-31.0.0/16, 192.168.0.0/16): a network
# left to the allocator could be given the /16 holding a fixed subnet ("Pool overlaps"), depending on
# what the engine handed out before.
SUBNET = "10.213.250.0/24"
BACK_SUBNET = "10.213.251.0/24"
STATIC_IP = {"app": "10.213.250.10", "worker": "10.213.250.11"}
REPO_IMAGE = "rbtest-keep"
DATA_VOLUME = "rbtest-keep-data"

ROLLBACK = f"""
id: keep-rollback
title: Roll back a container that has everything
severity: SEV-2
checks:
  - id: engine
    check: docker.engine
remediations:
  - id: rollback
    do: docker.rollback
    with: {{container: {PROJECT}-app-1, project: {PROJECT}, wait_healthy: 30}}
    when: "true"
    approval: manual
"""
SCALE = """
id: keep-scale-{service}
title: Scale a service whose containers have everything
severity: SEV-2
checks:
  - id: engine
    check: docker.engine
remediations:
  - id: scale
    do: docker.scale
    with: {{service: {service}, project: rbtest-keep, replicas: 2, max_replicas: 3, wait_healthy: 30}}
    when: "true"
    approval: auto
"""
OUTSIDE = f"""
id: keep-outside
title: A container outside the project
severity: SEV-2
checks:
  - id: engine
    check: docker.engine
remediations:
  - id: restart
    do: docker.restart
    with: {{container: sandbox-db-1, project: {PROJECT}}}
    when: "true"
    approval: auto
"""


def build(dc: docker.DockerClient, version: str) -> str:
    dockerfile = f"FROM {stack.IMAGE}\nLABEL rbtest.version={version}\nENV RBTEST_VERSION={version}\nVOLUME /cache\n"
    image, _ = dc.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{REPO_IMAGE}:{version}", rm=True)
    return str(image.id)


def everything(dc: docker.DockerClient, service: str, bind: Path, image: str) -> Any:
    """A container with the settings a hand-picked copy used to drop: on two networks, one with a fixed
    address."""
    endpoint = dc.api.create_endpoint_config(ipv4_address=STATIC_IP[service], aliases=[service])
    container = dc.containers.create(
        image,
        ["sleep", "infinity"],
        name=f"{PROJECT}-{service}-1",
        detach=True,
        user="65534:65534",
        working_dir="/srv/work",
        environment={"APP_SETTING": "kept", "DB_PASSWORD": "not-in-any-plan"},
        volumes={DATA_VOLUME: {"bind": "/data", "mode": "rw"}, str(bind): {"bind": "/bind", "mode": "rw"}},
        mounts=[Mount(target="/scratch", source=None, type="volume")],  # an anonymous --mount
        tmpfs={"/run/rb": "size=1m"},
        cap_add=["NET_ADMIN"],
        cap_drop=["MKNOD"],
        ulimits=[Ulimit(name="nofile", soft=1024, hard=2048)],
        extra_hosts={"db.internal": "10.1.2.3"},
        dns=["10.0.0.53"],
        dns_search=["rbtest.internal"],
        security_opt=["no-new-privileges"],
        nano_cpus=500_000_000,
        mem_limit="64m",
        pids_limit=100,
        shm_size="32m",
        read_only=True,
        restart_policy={"Name": "unless-stopped"},
        network=NETWORK,
        networking_config={NETWORK: endpoint},
        labels={
            "com.docker.compose.project": PROJECT,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": "1",
            "io.runbook.test": "1",
        },
    )
    dc.networks.get(BACK).connect(container, aliases=[f"{service}-back"])
    container.start()
    return container


def endpoints(attrs: dict[str, Any]) -> dict[str, Any]:
    """What a container is on each network: its aliases (less the engine's own short-id one) and address
    settings."""
    short = attrs["Id"][:12]
    return {
        name: (sorted(a for a in ep.get("Aliases") or [] if a != short), ep.get("IPAMConfig"))
        for name, ep in attrs["NetworkSettings"]["Networks"].items()
    }


@pytest.fixture
def keep(dc: docker.DockerClient, tmp_path: Path) -> Iterator[dict[str, Any]]:
    previous = build(dc, "previous")
    latest = build(dc, "latest")
    bind = tmp_path / "bind"
    bind.mkdir()
    bind.chmod(0o777)
    labels = {"com.docker.compose.project": PROJECT}
    try:  # made inside the try: whatever was made is removed, even if the next one fails
        for name, subnet in ((NETWORK, SUBNET), (BACK, BACK_SUBNET)):
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
            dc.networks.create(name, driver="bridge", ipam=ipam, labels=labels)
        dc.volumes.create(DATA_VOLUME)
        yield {"previous": previous, "latest": latest, "bind": bind}
    finally:
        for container in dc.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
            container.remove(force=True, v=True)
        for network in (NETWORK, BACK):
            with contextlib.suppress(docker.errors.NotFound):
                dc.networks.get(network).remove()
        with contextlib.suppress(docker.errors.NotFound):
            dc.volumes.get(DATA_VOLUME).remove(force=True)


def write_files(container: Any) -> None:
    script = "for d in /data /cache /scratch /bind; do echo kept-$d > $d/file; chmod 644 $d/file; done"
    result = container.exec_run(["sh", "-c", script], user="root")
    assert result.exit_code == 0, result.output


def read(container: Any, path: str) -> str:
    result = container.exec_run(["cat", path])  # as the container's own (non-root) user
    return result.output.decode().strip() if result.exit_code == 0 else f"<exit {result.exit_code}>"


def inspect(dc: docker.DockerClient, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = dc.api.inspect_container(name)
    attrs["Mounts"] = sorted(attrs["Mounts"], key=lambda m: m["Destination"])  # the engine's order varies
    return attrs


def differences(before: Any, after: Any, path: str = "") -> set[str]:
    """Dotted paths where two inspections differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: set[str] = set()
        for key in set(before) | set(after):
            out |= differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    return set() if before == after else {path}


# Fields that change with any new container: its identity, its life, its engine-made files and addresses.
NEW_CONTAINER = {"Id", "Created", "State", "Path", "ResolvConfPath", "HostnamePath", "HostsPath", "LogPath"}


def volatile(diff: set[str]) -> set[str]:
    return {
        d
        for d in diff
        if d.split(".")[0] not in NEW_CONTAINER
        and not d.startswith(("NetworkSettings.", "GraphDriver."))
        and d not in ("RestartCount", "Config.Hostname")
    }


def mounts(attrs: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {m["Destination"]: (m["Type"], m.get("Name") or m.get("Source")) for m in attrs["Mounts"]}


def test_rollback_keeps_everything_but_the_image(dc, agent_env, tmp_path: Path, keep) -> None:
    app = everything(dc, "app", keep["bind"], f"{REPO_IMAGE}:latest")
    write_files(app)
    before = inspect(dc, app.id)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "rollback.yaml").write_text(textwrap.dedent(ROLLBACK))
    _, report = run_runbook(agent_env, "keep-rollback", "--runbooks", str(runbooks), "--yes")
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"]) == ("applied", "applied"), rem
    assert "not-in-any-plan" not in str(rem["plan"])  # the env is bound by digest, never copied into the plan
    after = inspect(dc, f"{PROJECT}-app-1")
    assert after["Id"] != before["Id"] and after["Image"] == keep["previous"]
    new = dc.containers.get(after["Id"])
    for directory in ("/data", "/cache", "/scratch", "/bind"):
        assert read(new, f"{directory}/file") == f"kept-{directory}", directory
    # Every mount is the same volume or bind as before: the anonymous ones too.
    assert mounts(after) == mounts(before)
    diff = volatile(differences(before, after))
    # What must change: the image, and what the image itself gave (its label and env).
    assert {"Image", "Config.Image", "Config.Labels.rbtest.version"} <= diff
    allowed = {
        "Image",
        "Config.Image",
        "Config.Labels.rbtest.version",
        "Config.Env",  # the image's own RBTEST_VERSION; the container's APP_SETTING is kept (below)
        "HostConfig.Mounts",  # the anonymous volumes, mounted again by name
        "Mounts",  # the same volumes and binds (asserted above); the engine notes the re-mount's Mode
    }
    assert diff <= allowed, diff - allowed
    assert "APP_SETTING=kept" in after["Config"]["Env"] and "RBTEST_VERSION=previous" in after["Config"]["Env"]
    assert {m["Source"] for m in after["HostConfig"]["Mounts"] if m.get("Source")} == {
        m["Name"] for m in before["Mounts"] if m["Destination"] in ("/cache", "/scratch")
    }
    # The same networks, aliases and fixed address.
    assert endpoints(after) == endpoints(before)
    assert after["NetworkSettings"]["Networks"][NETWORK]["IPAddress"] == STATIC_IP["app"]

    # And a replica made afterwards from the rolled-back container gets anonymous volumes of its own.
    (runbooks / "scale.yaml").write_text(textwrap.dedent(SCALE.format(service="app")))
    _, report = run_runbook(agent_env, "keep-scale-app", "--runbooks", str(runbooks))
    assert report["remediations"][0]["outcome"] == "applied", report["remediations"][0]
    replica = inspect(dc, f"{PROJECT}-app-2")
    assert mounts(replica)["/cache"] != mounts(after)["/cache"]
    assert mounts(replica)["/data"] == mounts(after)["/data"]


def test_scale_makes_replicas_exactly_like_the_first(dc, agent_env, tmp_path: Path, keep) -> None:
    worker = everything(dc, "worker", keep["bind"], f"{REPO_IMAGE}:latest")
    write_files(worker)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "scale.yaml").write_text(textwrap.dedent(SCALE.format(service="worker")))
    _, report = run_runbook(agent_env, "keep-scale-worker", "--runbooks", str(runbooks))
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"]) == ("applied", "applied"), rem
    first = inspect(dc, f"{PROJECT}-worker-1")
    second = inspect(dc, f"{PROJECT}-worker-2")
    replica = dc.containers.get(second["Id"])
    assert read(replica, "/data/file") == "kept-/data" and read(replica, "/bind/file") == "kept-/bind"
    # Anonymous volumes are the replica's own, as with Compose: fresh, at the same places.
    assert read(replica, "/cache/file").startswith("<exit") and read(replica, "/scratch/file").startswith("<exit")
    diff = volatile(differences(first, second))
    allowed = {"Name", "Config.Labels.com.docker.compose.container-number", "Mounts"}
    assert diff <= allowed, diff - allowed
    # On the same networks, with the same aliases; an address of its own (the first one's is fixed).
    first_nets, second_nets = endpoints(first), endpoints(second)
    assert {n: a for n, (a, _) in second_nets.items()} == {n: a for n, (a, _) in first_nets.items()}
    assert second_nets[NETWORK][1] is None and first_nets[NETWORK][1]["IPv4Address"] == STATIC_IP["worker"]
    assert second["Config"]["Labels"]["com.docker.compose.container-number"] == "2"
    assert {m["Destination"] for m in second["Mounts"]} == {m["Destination"] for m in first["Mounts"]}


def test_a_container_outside_the_project_is_not_acted_on(dc, agent_env, tmp_path: Path) -> None:
    db = dc.containers.get(stack.container_name("db"))
    started = db.attrs["State"]["StartedAt"]
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "outside.yaml").write_text(textwrap.dedent(OUTSIDE))
    _, report = run_runbook(agent_env, "keep-outside", "--runbooks", str(runbooks))
    rem = report["remediations"][0]
    assert rem["decision"] == "plan_failed" and "not in compose project rbtest-keep" in rem["decision_reason"]
    db.reload()
    assert db.attrs["State"]["StartedAt"] == started
