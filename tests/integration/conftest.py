"""Fixtures for tests against the real sandbox: Docker engine, PostgreSQL and Redis in containers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.audit import AuditLog
from agent.config import Settings, load_settings

# Ryuk, testcontainers' reaper, is an image from a registry this machine cannot reach: off. Each test
# removes what it made (`.stop()` in its fixture or `finally`), and every such container is labelled
# io.runbook.test=1 for a manual sweep.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
from testcontainers.core.container import DockerContainer

from agent.executor import Executor
from agent.loader import LoadedRunbook, RunbookSet
from agent.models import CheckResult
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.templating import Templates
from sandbox import faults, stack
from tests.integration.harness import DECIDER, TOKEN, Daemon

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dc() -> Iterator[docker.DockerClient]:
    client = stack.client()
    stack.up(client)
    yield client
    client.close()


def restore_sandbox(dc: docker.DockerClient) -> None:
    """Back to the healthy definition: a fresh app (clean logs, new connections), empty test queues."""
    with contextlib.suppress(docker.errors.NotFound):
        dc.containers.get(stack.container_name("app")).remove(force=True)
    stack.up(dc)
    faults.clear_queue()


@pytest.fixture
def restore(dc: docker.DockerClient) -> Iterator[None]:
    """For tests that break the sandbox: it is healthy again afterwards, pass or fail."""
    yield
    restore_sandbox(dc)


@pytest.fixture
def agent_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}


RunRunbook = Callable[..., tuple[int, dict[str, Any]]]


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`runbook ARGS` as a real process, in the repository, with this environment."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def run_runbook(env: dict[str, str], runbook_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    """`runbook run ID --json ARGS` as a real process; returns (exit code, report)."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", runbook_id, "--json", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def run_json(agent_env: dict[str, str]) -> RunRunbook:
    """run_runbook with this test's environment (its own state directory)."""

    def run(runbook_id: str, *args: str) -> tuple[int, dict[str, Any]]:
        return run_runbook(agent_env, runbook_id, *args)

    return run


def checks_by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


Probe = Callable[..., CheckResult]


@pytest.fixture
def probe(tmp_path: Path, dc: docker.DockerClient) -> Probe:
    """Run one check through the real executor against the sandbox."""

    def run(check: str, timeout: float = 10, settings: Settings | None = None, **with_: Any) -> CheckResult:
        settings = settings or load_settings(env={**stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(tmp_path)})
        spec = Runbook.model_validate(
            {
                "id": "probe",
                "title": "Probe",
                "severity": "SEV-4",
                "checks": [{"id": "c", "check": check, "with": with_, "timeout": timeout}],
            }
        )
        runbooks = RunbookSet({"probe": LoadedRunbook(spec, Path("probe.yaml"))}, Templates(), Registry())
        redactor = Redactor()
        executor = Executor(runbooks, settings, redactor, AuditLog(tmp_path / "audit.jsonl", redactor))
        return executor.run("probe", actor="test").checks[0]

    return run


def throwaway_container(command: list[str], *, name: str | None = None, **kwargs: Any) -> DockerContainer:
    """A container a test makes and throws away, through testcontainers: from the locally built sandbox
    image (nothing is pulled: it is present), labelled as a test's, started now; `.stop()` removes it.
    `kwargs` are docker-py's (labels are added to the test's own)."""
    labels = {"io.runbook.test": "1", **kwargs.pop("labels", {})}
    container = DockerContainer(stack.IMAGE, name=name or f"rbtest-{uuid.uuid4().hex[:8]}")
    return container.with_command(command).with_kwargs(labels=labels, **kwargs).start()


@pytest.fixture
def throwaway(dc: docker.DockerClient) -> Iterator[Callable[..., Any]]:
    """Start short-lived containers from the sandbox image (no ports, default bridge); removed after.
    Each is a testcontainers container; the test gets docker-py's object for it."""
    made: list[DockerContainer] = []

    def start(command: list[str], **kwargs: Any) -> Any:
        made.append(throwaway_container(command, **kwargs))
        return made[-1].get_wrapped_container()

    yield start
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.stop()


def world(dc: docker.DockerClient) -> dict[str, Any]:
    """What a dry run must leave exactly as it was: containers (ids, starts, restarts), replicas, sessions."""
    import psycopg

    containers = {}
    for c in dc.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.PROJECT}"}):
        state = c.attrs["State"]
        containers[c.name] = (c.id, c.attrs["RestartCount"], state["StartedAt"], state["Status"], c.attrs["Image"])
    with psycopg.connect(stack.AGENT_ENV["DATABASE_URL"], autocommit=True) as conn:
        sessions = conn.execute(
            "SELECT pid, backend_start::text, state FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND application_name <> 'runbook-agent' ORDER BY pid"
        ).fetchall()
    return {"containers": containers, "sessions": sessions}


def starts(dc: docker.DockerClient, name: str, since: float) -> int:
    """How many times the engine started a container since a time (docker events)."""
    import time

    # Docker reads "seconds.nanoseconds"; whole seconds would count a start just before `since`.
    events = dc.events(
        since=f"{since:.9f}", until=int(time.time()) + 1, filters={"container": name, "event": "start"}, decode=True
    )
    return sum(1 for _ in events)


# --- the daemon as a real process (tests/integration/harness.py) --------------------------------------


@pytest.fixture
def daemon_env(agent_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    people = tmp_path / "decision-tokens"
    people.write_text(f"alice: {DECIDER}\n")
    return {**agent_env, "RUNBOOK_API_TOKEN": TOKEN, "RUNBOOK_DECISION_TOKENS_FILE": str(people)}


@pytest.fixture
def daemon(daemon_env: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(daemon_env, REPO / "runbooks").start()
    yield d
    d.stop()


def run_in_terminal(argv: list[str], env: dict[str, str], answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, answering its y/N prompt as a person would."""
    import select

    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
    os.close(slave)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closed: the program ended
                    break
                if not chunk:
                    break
                out += chunk
                if not answered and b"[y/N]" in out:
                    os.write(master, answer.encode() + b"\n")
                    answered = True
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


# --- shared state on PostgreSQL (issue: several agents) ------------------------------------------------

STATE_PASSWORD = "state-s3cret-pw"


@pytest.fixture(scope="session")
def state_server(dc: docker.DockerClient) -> Iterator[str]:
    """A PostgreSQL of its own for the agents' shared state (not the sandbox's, which tests break on
    purpose): the sandbox image's server, on a free port of 127.0.0.1. Yields the superuser's URL of its
    `postgres` database; tests make databases of their own on it."""
    import psycopg

    # docker-py itself: testcontainers cannot publish on 127.0.0.1 alone with a free port.
    container = dc.containers.run(
        stack.IMAGE,
        ["/opt/sandbox/db.sh"],
        name=f"rbtest-state-{uuid.uuid4().hex[:8]}",
        environment={"AGENT_PASSWORD": STATE_PASSWORD, "MAX_CONNECTIONS": "100"},
        ports={"5432/tcp": ("127.0.0.1", None)},
        labels={"io.runbook.test": "1"},
        detach=True,
    )
    try:
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])
        url = f"postgresql://runbook:{STATE_PASSWORD}@127.0.0.1:{port}/postgres"

        def ready() -> bool:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return True
            except psycopg.Error:
                return False

        assert faults.wait_for(ready, timeout=90), container.logs()[-2000:]
        yield url
    finally:
        container.remove(force=True)


def state_database(server: str, name: str) -> str:
    """A fresh database on the state server: its URL."""
    import psycopg

    database = f"rbs_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    return server.rsplit("/", 1)[0] + "/" + database


# --- a container of its own compose project, and a runbook that restarts it on an alert -----------------

BOUNCE_RUNBOOK = """
id: bounce-{name}
title: Bounce ({name})
severity: SEV-3
triggers:
  - {{alertname: {alertname}}}
params:
  target: {target}
checks:
  - {{id: there, check: docker.container, with: {{container: '{{{{ params.target }}}}'}}}}
remediations:
  - id: bounce
    do: docker.restart
    with: {{container: '{{{{ params.target }}}}', wait_healthy: 30s}}
    when: 'true'
    approval: {approval}
    cooldown: 0s
    limit: {{max: 20, per: 1h}}
    verify: [there]
"""


@pytest.fixture
def target() -> Iterator[tuple[str, str]]:
    """A container of a compose project of its own (the only one the runbooks may restart): (project,
    container name)."""
    project = f"rbtest-{uuid.uuid4().hex[:8]}"
    container = throwaway_container(
        ["sleep", "600"],
        name=f"{project}-bounce-1",
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "bounce"},
    )
    yield project, container.get_wrapped_container().name
    container.stop()
