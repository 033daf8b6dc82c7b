"""A remote Docker engine over TLS, as the docker CLI reaches one (DOCKER_HOST=tcp://..., DOCKER_TLS_VERIFY,
DOCKER_CERT_PATH): a second dockerd on this machine with certificates made here. Its containers are
checked and restarted there, never on the local engine; a client certificate it does not trust, a
plain connection or missing certificate files are clear errors, never tracebacks."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import cli, run_runbook
from tests.integration.remote_engine import IMAGE, RemoteEngine, remote_engine, stranger_certificates
from tests.integration.ssh_server import SshServer, ssh_server

pytestmark = pytest.mark.integration

RUNBOOK = """
id: remote-app
title: An app on another host
severity: SEV-2
params:
  target: {target}
checks:
  - id: app
    check: docker.container
    with: {{container: "{{{{ params.target }}}}"}}
remediations:
  - id: bounce
    do: docker.restart
    with: {{container: "{{{{ params.target }}}}", wait_healthy: 30s}}
    when: "true"
    approval: auto
    cooldown: 0s
    verify: [app]
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[RemoteEngine]:
    with remote_engine() as made:
        yield made


@pytest.fixture
def remote_app(engine: RemoteEngine, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A container of a compose project of its own on the remote engine, and a runbook for it."""
    project = f"rbtest-{uuid.uuid4().hex[:8]}"
    container = engine.admin.containers.run(
        IMAGE,
        name=f"{project}-app-1",
        network_mode="none",
        detach=True,
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "app"},
    )
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "remote.yaml").write_text(RUNBOOK.format(target=container.name))
    yield project, container.name, runbooks
    container.remove(force=True)


def test_a_remote_engines_container_is_checked_and_restarted_over_tls(
    engine: RemoteEngine, remote_app: tuple[str, str, Path], agent_env: dict[str, str], dc
) -> None:
    project, name, runbooks = remote_app
    env = {**agent_env, **engine.env(), "RUNBOOK_COMPOSE_PROJECT": project}
    assert not [c for c in dc.containers.list(all=True) if c.name == name]  # it is only on the remote engine
    started = engine.admin.api.inspect_container(name)["State"]["StartedAt"]

    code, report = run_runbook(env, "remote-app", "--runbooks", str(runbooks), "--dry-run")
    (check,) = report["checks"]
    assert (check["status"], code) == ("OK", 0) and name in check["summary"], check
    assert engine.admin.api.inspect_container(name)["State"]["StartedAt"] == started  # a dry run changed nothing

    code, report = run_runbook(env, "remote-app", "--runbooks", str(runbooks))
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"], code) == ("applied", "resolved", 0), rem
    assert engine.admin.api.inspect_container(name)["State"]["StartedAt"] != started  # restarted there


def test_an_untrusted_certificate_or_a_plain_connection_is_a_clear_critical(
    engine: RemoteEngine, remote_app: tuple[str, str, Path], agent_env: dict[str, str], tmp_path: Path
) -> None:
    project, _, runbooks = remote_app
    base = {**agent_env, **engine.env(), "RUNBOOK_COMPOSE_PROJECT": project}
    stranger = stranger_certificates(tmp_path, engine.certs / "ca.pem")
    for env in (
        {**base, "DOCKER_CERT_PATH": str(stranger)},  # the engine refuses a client certificate it did not sign
        {k: v for k, v in base.items() if k not in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")},  # no TLS at all
    ):
        code, report = run_runbook(env, "remote-app", "--runbooks", str(runbooks), "--dry-run")
        (check,) = report["checks"]
        assert (check["status"], check["code"], code) == ("CRITICAL", "docker_unreachable", 2), check
        assert "Traceback" not in check["summary"]


def test_missing_certificate_files_are_a_configuration_error(
    engine: RemoteEngine, remote_app: tuple[str, str, Path], agent_env: dict[str, str], tmp_path: Path
) -> None:
    _, _, runbooks = remote_app
    env = {**agent_env, **engine.env(), "DOCKER_CERT_PATH": str(tmp_path / "nowhere")}
    done = cli(env, "run", "remote-app", "--runbooks", str(runbooks), timeout=120)
    assert done.returncode == 3, done  # no diagnosis: UNKNOWN, as Nagios reads it
    assert "docker_cert_path" in done.stderr and "no ca.pem, cert.pem, key.pem" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_main_engine_keeps_its_default_bridge(engine: RemoteEngine, dc) -> None:
    """The second engine has a bridge of its own: started with `--bridge=none`, dockerd deletes docker0,
    the main engine's, and no container could start on the default network after it."""
    from sandbox import stack

    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    output = dc.containers.run(stack.IMAGE, ["echo", "bridged"], remove=True)
    assert output.strip() == b"bridged"


FLEET = """
id: fleet-app
title: The app on every engine
severity: SEV-2
checks:
  - {{id: app, check: docker.container, hosts: [local, remote], with: {{container: {name}}}}}
  - {{id: reach, check: docker.container, hosts: dead, timeout: 8s, with: {{container: {name}}}}}
remediations:
  - id: bounce
    do: docker.restart
    hosts: failing:app
    with: {{container: {name}, wait_healthy: 30s}}
    when: not checks.app.ok
    approval: auto
    cooldown: 0s
    verify: [app]
"""


def test_an_inventory_of_engines_fans_out_and_rolls_out_where_it_failed(
    engine: RemoteEngine, agent_env: dict[str, str], tmp_path: Path, dc
) -> None:
    """Three engines in one agent: this one, the TLS one, and one that does not answer. The check runs on
    each (`app@remote`), the dead engine is CRITICAL on its own line, and the restart is planned and
    applied only where the check failed, through that engine."""
    import json
    import time

    from sandbox import stack
    from tests.integration.harness import free_port

    project = f"rbtest-{uuid.uuid4().hex[:8]}"
    name = f"{project}-app-1"
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "app"}
    here = dc.containers.run(stack.IMAGE, ["sleep", "600"], name=name, detach=True, labels=labels)
    there = engine.admin.containers.create(IMAGE, name=name, network_mode="none", labels=labels)  # exited
    try:
        there.start()
        there.stop(timeout=0)
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "fleet.yaml").write_text(FLEET.format(name=name))
        engines = {
            "local": {"docker_host": "unix:///var/run/docker.sock"},
            "remote": {"docker_host": engine.host, "tls_verify": True, "cert_path": str(engine.certs)},
            "dead": {"docker_host": f"tcp://127.0.0.1:{free_port()}", "connect_timeout": "1s", "read_timeout": "2s"},
        }
        env = {
            **agent_env,
            "RUNBOOK_ENGINES": json.dumps(engines),
            "RUNBOOK_COMPOSE_PROJECT": project,
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        }
        started_here = dc.api.inspect_container(name)["State"]["StartedAt"]
        began = time.monotonic()
        code, report = run_runbook(env, "fleet-app", "--runbooks", str(tmp_path / "runbooks"))
        checks = {c["id"]: c for c in report["checks"]}
        assert list(checks) == ["app@local", "app@remote", "reach@dead"], list(checks)
        assert checks["app@local"]["status"] == "OK" and checks["app@remote"]["status"] == "CRITICAL"
        assert (checks["reach@dead"]["status"], checks["reach@dead"]["code"]) == ("CRITICAL", "docker_unreachable")
        rem = report["remediations"][0]
        assert [c["target"] for c in rem["plan"]["changes"]] == [f"container:{name}@remote"], rem["plan"]
        assert (rem["decision"], rem["outcome"]) == ("applied", "resolved"), rem
        assert engine.admin.api.inspect_container(name)["State"]["Running"]  # restarted there...
        assert dc.api.inspect_container(name)["State"]["StartedAt"] == started_here  # ...and only there
        assert [c["id"] for c in report["final_checks"]][:2] == ["app@local", "app@remote"]
        assert code == 2 and time.monotonic() - began < 120  # the dead engine still CRITICAL after the fix
    finally:
        here.remove(force=True)
        there.remove(force=True)


# ---- ssh:// engines: the remote engine's socket forwarded by OpenSSH, to an sshd on this machine ----


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with ssh_server() as server:
        yield server


def _ssh_env(engine: RemoteEngine, server: SshServer, identity: Path | None = None) -> dict[str, str]:
    return {
        "DOCKER_HOST": server.url,
        "RUNBOOK_DOCKER_SSH_IDENTITY": str(identity or server.identity),
        "RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": str(server.known_hosts),
        "RUNBOOK_DOCKER_SSH_SOCKET": str(engine.socket),
    }


def _forwards_to(server: SshServer) -> list[str]:
    """The ssh processes forwarding to this server (the agent's, while it runs)."""
    found = subprocess.run(["pgrep", "-af", "--", f"-p {server.port} -L"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "ssh -N" in line]


def test_an_ssh_engines_container_is_checked_and_restarted_through_a_forward(
    engine: RemoteEngine, sshd: SshServer, remote_app: tuple[str, str, Path], agent_env: dict[str, str], dc
) -> None:
    """DOCKER_HOST=ssh://root@127.0.0.1:PORT, as the docker CLI takes it: the container on the engine behind
    that host is checked (a dry run changes nothing) and restarted there; the forward ends with the run."""
    project, name, runbooks = remote_app
    env = {**agent_env, **_ssh_env(engine, sshd), "RUNBOOK_COMPOSE_PROJECT": project}
    started = engine.admin.api.inspect_container(name)["State"]["StartedAt"]

    code, report = run_runbook(env, "remote-app", "--runbooks", str(runbooks), "--dry-run")
    (check,) = report["checks"]
    assert (check["status"], code) == ("OK", 0) and name in check["summary"], check
    assert engine.admin.api.inspect_container(name)["State"]["StartedAt"] == started

    code, report = run_runbook(env, "remote-app", "--runbooks", str(runbooks))
    rem = report["remediations"][0]
    assert (rem["decision"], rem["outcome"], code) == ("applied", "resolved", 0), rem
    assert engine.admin.api.inspect_container(name)["State"]["StartedAt"] != started  # restarted there
    assert not [c for c in dc.containers.list(all=True) if c.name == name]  # never on this engine
    assert _forwards_to(sshd) == []  # the run's forward ended with it


def test_ssh_engines_that_refuse_are_each_a_clear_critical(
    engine: RemoteEngine, sshd: SshServer, remote_app: tuple[str, str, Path], agent_env: dict[str, str], tmp_path: Path
) -> None:
    """A key the server does not authorize, a host key the agent does not know, a port where no sshd
    listens, and a socket on the host that is not the engine's: each CRITICAL, saying why, in time."""
    import time

    from tests.integration.harness import free_port

    project, _, runbooks = remote_app
    unknown = tmp_path / "known_hosts"
    unknown.write_text("")
    base = {**agent_env, **_ssh_env(engine, sshd), "RUNBOOK_COMPOSE_PROJECT": project}
    cases = {
        "Permission denied": {"RUNBOOK_DOCKER_SSH_IDENTITY": str(sshd.stranger)},  # root, with a key it does not know
        "Host key verification failed": {"RUNBOOK_DOCKER_SSH_KNOWN_HOSTS": str(unknown)},
        "Connection refused": {"DOCKER_HOST": f"ssh://root@127.0.0.1:{free_port()}"},
        "no Docker engine at that socket": {"RUNBOOK_DOCKER_SSH_SOCKET": str(tmp_path / "no-engine.sock")},
    }
    for reason, change in cases.items():
        began = time.monotonic()
        code, report = run_runbook({**base, **change}, "remote-app", "--runbooks", str(runbooks), "--dry-run")
        (check,) = report["checks"]
        assert (check["status"], check["code"], code) == ("CRITICAL", "docker_unreachable", 2), check
        assert reason in check["summary"] and "Traceback" not in check["summary"], check
        assert time.monotonic() - began < 60
    assert _forwards_to(sshd) == []


def test_an_ssh_forward_is_made_again_when_it_dies_and_ends_with_a_killed_agent(
    engine: RemoteEngine, sshd: SshServer
) -> None:
    """A dropped link ends the forward: the next use makes a new one. An agent killed -9 takes its forward
    with it (the parent-death signal), so no ssh process is left holding the engine open."""
    import os
    import signal
    import sys
    import time

    import docker as docker_sdk

    from agent.ssh_tunnel import Forward, close_all, local_socket

    forward = Forward(sshd.url, str(engine.socket), sshd.identity, sshd.known_hosts, 2.0)
    try:
        first = local_socket(forward, 10)
        assert docker_sdk.DockerClient(base_url=first, version="1.41").ping()
        assert local_socket(forward, 10) == first  # one forward per engine, reused
        (line,) = _forwards_to(sshd)
        os.kill(int(line.split()[0]), signal.SIGKILL)  # the link drops
        deadline = time.monotonic() + 20
        while _forwards_to(sshd) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = local_socket(forward, 10)
        assert second != first and docker_sdk.DockerClient(base_url=second, version="1.41").ping()
    finally:
        close_all()
    assert _forwards_to(sshd) == [] and not Path(first.removeprefix("unix://")).parent.exists()

    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from agent.ssh_tunnel import Forward, local_socket;"
            f"print(local_socket(Forward({sshd.url!r}, {str(engine.socket)!r}, Path({str(sshd.identity)!r}),"
            f" Path({str(sshd.known_hosts)!r})), 10), flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert agent.stdout is not None
        import select

        assert select.select([agent.stdout], [], [], 60)[0], "the agent made no forward"
        left = Path(agent.stdout.readline().strip().removeprefix("unix://")).parent
        assert left.is_dir() and len(_forwards_to(sshd)) == 1
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 20
        while _forwards_to(sshd) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _forwards_to(sshd) == []
        local_socket(forward, 10)  # the next agent to make a forward removes what the killed one left
        assert not left.exists()
    finally:
        close_all()
        if agent.poll() is None:
            agent.kill()
