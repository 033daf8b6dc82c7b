"""Swarm services as targets, on a real single-node swarm (this engine, joined for the module and left
after): the service and node checks against real faults (a crash-looping task, a task no node can take,
a drained node), and the remediations through Swarm's own primitives — scale, rolling restart (forced
update), rollback to the previous spec — each planned, applied, verified and limited like the others."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox import faults, stack
from tests.integration.conftest import run_runbook

pytestmark = pytest.mark.integration


JOINED: dict[str, bool] = {}


@pytest.fixture(scope="module")
def manager() -> Iterator[docker.DockerClient]:
    """This engine as a single-node swarm manager, for the module's tests."""
    client = stack.client()
    joined = False
    if not client.info().get("Swarm", {}).get("ControlAvailable"):
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        joined = True
    JOINED["here"] = joined
    yield client
    for service in client.services.list(filters={"label": "io.runbook.test=1"}):
        service.remove()
    if joined:
        client.swarm.leave(force=True)
        # Leaving a swarm breaks the embedded DNS of bridge networks made before it (Docker 20.10):
        # the sandbox gets a fresh network so the tests after these see a working stack.
        stack.down(client)
        stack.up(client)
    client.close()


# A task that stops at once when asked (a bare `sleep` as PID 1 ignores SIGTERM: 10 s per replacement).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def make_service(client: docker.DockerClient, command: list[str], **kwargs: Any) -> Any:
    name = f"rbtest-{uuid.uuid4().hex[:8]}"
    kwargs.setdefault("restart_policy", docker.types.RestartPolicy(condition="any", delay=1_000_000_000))
    # By image id: Swarm tries to pull a tag at every task start (a local-only tag: a registry timeout).
    image = client.images.get(stack.IMAGE).id
    return client.services.create(image, command=command, name=name, labels={"io.runbook.test": "1"}, **kwargs)


def running(service: Any) -> int:
    return sum(t["Status"]["State"] == "running" and t["DesiredState"] == "running" for t in service.tasks())


def write(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "runbooks"
    directory.mkdir(exist_ok=True)
    (directory / f"rb{len(list(directory.iterdir()))}.yaml").write_text(text)
    return directory


def test_service_check_sees_running_crash_looping_and_unplaceable_tasks(manager, probe) -> None:
    healthy = make_service(manager, SLEEPER)
    crashing = make_service(manager, ["sh", "-c", "echo starting; sleep 0.2; exit 3"])
    stuck = make_service(
        manager,
        SLEEPER,
        constraints=["node.labels.rbtest-nowhere==1"],
        mode=docker.types.ServiceMode("replicated", 2),
    )
    try:
        assert faults.wait_for(lambda: running(healthy) == 1, timeout=60)
        result = probe("swarm.service", service=healthy.name)
        assert result.status.value == "OK" and result.summary.startswith(f"{healthy.name}: 1/1 tasks running")
        assert result.metrics == {"desired": 1.0, "running": 0.0 + 1, "failed_recent": 0.0}

        # Swarm restarts it every second or so; each exit is a failed task with its exit code.
        assert faults.wait_for(
            lambda: probe("swarm.service", service=crashing.name).metrics.get("failed_recent", 0) >= 3, timeout=60
        )
        result = probe("swarm.service", service=crashing.name)
        assert result.status.value == "CRITICAL" and result.code in ("tasks_not_running", "task_failures")
        assert "failed in the last 600s" in result.summary and "non-zero exit (3)" in result.summary, result.summary

        result = probe("swarm.service", service=stuck.name)
        assert result.status.value == "CRITICAL" and result.code == "tasks_not_running"
        assert "0/2 tasks running" in result.summary and "not placed" in result.summary, result.summary

        missing = probe("swarm.service", service="rbtest-no-such-service")
        assert (missing.status.value, missing.code) == ("CRITICAL", "service_missing")
        # The engine would take an id or its prefix for a name: a name reaches that service only.
        by_prefix = probe("swarm.service", service=healthy.id[:12])
        assert (by_prefix.status.value, by_prefix.code) == ("CRITICAL", "service_missing")
    finally:
        for service in (healthy, crashing, stuck):
            service.remove()


def test_nodes_check_sees_a_drained_node(manager, probe) -> None:
    if not JOINED["here"]:
        pytest.skip("this engine was a swarm manager already: its nodes are not drained by a test")
    assert faults.wait_for(lambda: probe("swarm.nodes").status.value == "OK", timeout=60)
    result = probe("swarm.nodes")
    assert result.metrics["ready"] == 1.0, result.summary
    node = manager.nodes.list()[0]
    spec = dict(node.attrs["Spec"])
    try:
        node.update({**spec, "Availability": "drain"})
        result = probe("swarm.nodes")
        assert (result.status.value, result.code) == ("CRITICAL", "nodes_below_min")
        assert "0/1 nodes ready and active" in result.summary and "drain" in result.summary
    finally:
        node.reload()
        node.update({**node.attrs["Spec"], "Availability": "active"})


SERVICE_RUNBOOK = """
id: swarm-{verb}
title: Swarm {verb}
severity: SEV-2
params:
  service: {service}
checks:
  - id: tasks
    check: swarm.service
    with: {{service: "{{{{ params.service }}}}"}}
remediations:
  - id: fix
    do: {do}
    with: {with_}
    when: "true"
    approval: auto
    cooldown: 0s
    verify: [tasks]
    verify_timeout: 60s
"""


def test_scale_a_swarm_service(manager, agent_env, tmp_path: Path) -> None:
    service = make_service(manager, SLEEPER)
    try:
        with_ = f"{{service: {service.name}, replicas: 3, max_replicas: 5}}"
        runbooks = write(
            tmp_path, SERVICE_RUNBOOK.format(verb="scale", service=service.name, do="docker.scale", with_=with_)
        )
        code, report = run_runbook(agent_env, "swarm-scale", "--runbooks", str(runbooks), "--dry-run")
        change = report["remediations"][0]["plan"]["changes"][0]
        assert (change["effect"], change["before"], change["after"]) == ("docker.service.scale", 1, 3)
        code, report = run_runbook(agent_env, "swarm-scale", "--runbooks", str(runbooks))
        assert report["remediations"][0]["outcome"] == "resolved" and code == 0, report["remediations"][0]
        service.reload()
        assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
        assert faults.wait_for(lambda: running(service) == 3, timeout=60)
    finally:
        service.remove()


def test_rolling_restart_replaces_every_task_through_swarm(manager, agent_env, tmp_path: Path) -> None:
    service = make_service(manager, SLEEPER, mode=docker.types.ServiceMode("replicated", 2))
    try:
        assert faults.wait_for(lambda: running(service) == 2, timeout=60)
        before = {t["ID"] for t in service.tasks() if t["DesiredState"] == "running"}
        with_ = f"{{service: {service.name}, wait: 90s}}"
        runbooks = write(
            tmp_path, SERVICE_RUNBOOK.format(verb="restart", service=service.name, do="swarm.restart", with_=with_)
        )
        write(tmp_path, SERVICE_RUNBOOK.format(verb="rollback", service=service.name, do="swarm.rollback", with_=with_))
        _, report = run_runbook(agent_env, "swarm-restart", "--runbooks", str(runbooks), "--dry-run")
        (change,) = report["remediations"][0]["plan"]["changes"]
        assert (change["effect"], change["target"], change["before"], change["after"]) == (
            "swarm.service.force_update",
            f"service:{service.name}",
            0,
            1,
        )
        assert "rolling restart" in change["summary"] and "1 at a time" in change["summary"]
        service.reload()
        assert service.attrs["Spec"]["TaskTemplate"].get("ForceUpdate", 0) == 0  # the dry run changed nothing

        code, report = run_runbook(agent_env, "swarm-restart", "--runbooks", str(runbooks))
        rem = report["remediations"][0]
        assert (rem["decision"], rem["outcome"], code) == ("applied", "resolved", 0), rem
        assert rem["results"][0]["update"] == "completed"
        service.reload()
        assert service.attrs["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
        after = {t["ID"] for t in service.tasks() if t["DesiredState"] == "running"}
        assert len(after) == 2 and not after & before  # every task replaced

        # A second restart plans the next counter; a rollback now would only undo the restart: refused.
        _, report = run_runbook(agent_env, "swarm-restart", "--runbooks", str(runbooks), "--dry-run")
        assert report["remediations"][0]["plan"]["changes"][0]["before"] == 1
        _, report = run_runbook(agent_env, "swarm-rollback", "--runbooks", str(runbooks), "--dry-run")
        rem = report["remediations"][0]
        assert rem["decision"] == "plan_failed" and "no release to roll back" in rem["decision_reason"], rem
    finally:
        service.remove()


def test_rollback_to_the_previous_spec(manager, agent_env, tmp_path: Path) -> None:
    service = make_service(manager, SLEEPER, env=["RELEASE=1"])
    try:
        assert faults.wait_for(lambda: running(service) == 1, timeout=60)
        with_ = f"{{service: {service.name}}}"
        runbooks = write(
            tmp_path, SERVICE_RUNBOOK.format(verb="rollback", service=service.name, do="swarm.rollback", with_=with_)
        )
        _, report = run_runbook(agent_env, "swarm-rollback", "--runbooks", str(runbooks), "--dry-run")
        rem = report["remediations"][0]
        assert rem["decision"] == "plan_failed" and "no previous spec" in rem["decision_reason"]

        service.update(env=["RELEASE=2"])  # a bad release
        assert faults.wait_for(
            lambda: (service.reload() or service.attrs.get("UpdateStatus", {}).get("State")) == "completed", timeout=60
        )
        _, report = run_runbook(agent_env, "swarm-rollback", "--runbooks", str(runbooks), "--dry-run")
        (change,) = report["remediations"][0]["plan"]["changes"]
        assert change["effect"] == "swarm.service.rollback" and "TaskTemplate.ContainerSpec.Env" in change["summary"]
        service.reload()
        assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["RELEASE=2"]  # dry run: as it was

        _, report = run_runbook(agent_env, "swarm-rollback", "--runbooks", str(runbooks))
        rem = report["remediations"][0]
        assert (rem["decision"], rem["outcome"]) == ("applied", "resolved"), rem
        service.reload()
        assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["RELEASE=1"]
        assert service.attrs["UpdateStatus"]["State"] == "rollback_completed"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and running(service) != 1:
            time.sleep(0.5)
        tasks = [t for t in service.tasks() if t["DesiredState"] == "running"]
        assert [t["Spec"]["ContainerSpec"]["Env"] for t in tasks] == [["RELEASE=1"]]
        # Swarm swaps the two specs on a rollback: a second one would bring the bad release back. Refused.
        _, report = run_runbook(agent_env, "swarm-rollback", "--runbooks", str(runbooks), "--dry-run")
        rem = report["remediations"][0]
        assert rem["decision"] == "plan_failed" and "already rolled back" in rem["decision_reason"], rem
    finally:
        service.remove()
