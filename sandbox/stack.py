"""The sandbox stack: compose-labelled containers shaped like the guide's production (app, worker, db, redis).

One definition serves `make demo`, `make sandbox` and the integration tests. Images are built locally
(no registry needed): a debootstrapped base (build-base-image.sh) plus the services' code on top.

    python -m sandbox.stack up | down | status | env
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

HERE = Path(__file__).resolve().parent
PROJECT = "sandbox"
NETWORK = f"{PROJECT}_default"
BASE_IMAGE = "runbook-sandbox-base:bookworm"
IMAGE = "runbook-sandbox:latest"
APP_IMAGE = "runbook-sandbox-app"  # tagged :latest; rollbacks use :previous
AGENT_PASSWORD = "agent-s3cret-pw"
REDIS_PASSWORD = "redis-s3cret-pw"
PORTS = {"db": 55432, "redis": 56379, "app": 58080}

# What the agent uses to reach the sandbox from the host.
AGENT_ENV = {
    "DATABASE_URL": f"postgresql://runbook:{AGENT_PASSWORD}@127.0.0.1:{PORTS['db']}/app",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{PORTS['redis']}/0",
    "APP_URL": f"http://127.0.0.1:{PORTS['app']}",
    "RUNBOOK_COMPOSE_PROJECT": PROJECT,
}
_APP_ENV = {
    "APP_DATABASE_URL": "postgresql://app:app-sandbox@db:5432/app",
    "APP_REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
}
_SECOND = 1_000_000_000


def _health(test: list[str], interval: float = 2) -> dict[str, Any]:
    return {
        "test": ["CMD", *test],
        "interval": int(interval * _SECOND),
        "timeout": 3 * _SECOND,
        "retries": 3,
        "start_period": 2 * _SECOND,
    }


SERVICES: dict[str, dict[str, Any]] = {
    "db": {
        "image": IMAGE,
        "command": ["/opt/sandbox/db.sh"],
        "environment": {"AGENT_PASSWORD": AGENT_PASSWORD},
        "ports": {"5432/tcp": ("127.0.0.1", PORTS["db"])},
        "healthcheck": _health(["pg_isready", "-h", "127.0.0.1", "-U", "runbook", "-d", "app"]),
    },
    "redis": {
        "image": IMAGE,
        "command": [
            "redis-server",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--requirepass",
            REDIS_PASSWORD,
            "--maxmemory",
            "256mb",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        "ports": {"6379/tcp": ("127.0.0.1", PORTS["redis"])},
        "healthcheck": _health(["redis-cli", "-a", REDIS_PASSWORD, "--no-auth-warning", "ping"]),
    },
    "app": {
        "image": f"{APP_IMAGE}:latest",
        "command": ["python3", "/opt/sandbox/app.py"],
        "environment": _APP_ENV,
        "ports": {"8080/tcp": ("127.0.0.1", PORTS["app"])},
        "healthcheck": _health(["python3", "/opt/sandbox/healthcheck.py"], interval=3),
    },
    "worker": {
        "image": IMAGE,
        "command": ["python3", "/opt/sandbox/worker.py"],
        "environment": _APP_ENV,
    },
    # The users: 2 requests a second to the app's user route, logged as a load balancer would.
    "traffic": {
        "image": IMAGE,
        "command": ["python3", "/opt/sandbox/traffic.py"],
        "environment": {"TARGET": "http://app:8080/", "RATE": "2"},
    },
}
ORDER = ["db", "redis", "app", "worker", "traffic"]


def client() -> docker.DockerClient:
    return docker.from_env(timeout=30)


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((HERE / "services").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def build_image(dc: docker.DockerClient, tag: str, **buildargs: str) -> str:
    """Build the services image on the local base; reused while the sources are unchanged."""
    label = _source_hash() + json.dumps(buildargs, sort_keys=True)
    try:
        image = dc.images.get(tag)
        if image.labels.get("io.runbook.sandbox.source") == label:
            return str(image.id)
    except docker.errors.ImageNotFound:
        pass
    try:
        dc.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(HERE / "build-base-image.sh"), BASE_IMAGE], check=True)
    image, _ = dc.images.build(
        path=str(HERE / "services"),
        tag=tag,
        rm=True,
        pull=False,
        buildargs={"BASE": BASE_IMAGE, **buildargs},
        labels={"io.runbook.sandbox.source": label},
    )
    return str(image.id)


def ensure_images(dc: docker.DockerClient) -> None:
    build_image(dc, IMAGE)
    image = dc.images.get(IMAGE)
    image.tag(APP_IMAGE, "latest")


def labels(service: str, number: int = 1) -> dict[str, str]:
    return {
        "com.docker.compose.project": PROJECT,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.oneoff": "False",
        "io.runbook.sandbox.definition": _definition_hash(service),
    }


def _definition_hash(service: str) -> str:
    return hashlib.sha256(json.dumps(SERVICES[service], sort_keys=True).encode()).hexdigest()[:16]


def container_name(service: str, number: int = 1) -> str:
    return f"{PROJECT}-{service}-{number}"


def create(dc: docker.DockerClient, service: str, number: int = 1, **overrides: Any) -> Any:
    spec = {**SERVICES[service], **overrides}
    return dc.containers.create(
        spec["image"],
        command=spec["command"],
        name=container_name(service, number),
        environment=spec.get("environment", {}),
        ports=spec.get("ports", {}),
        healthcheck=spec.get("healthcheck"),
        labels=labels(service, number),
        network=NETWORK,
        # Compose gives each container its service name as a DNS alias on the project network.
        networking_config={NETWORK: dc.api.create_endpoint_config(aliases=[service])},
        stop_signal="SIGTERM",
    )


def wait_healthy(dc: docker.DockerClient, names: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            state = dc.containers.get(name).attrs["State"]
            health = state.get("Health", {}).get("Status")
            if state["Status"] == "running" and health in (None, "healthy"):
                pending.remove(name)
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"sandbox containers not healthy after {timeout:.0f}s: {', '.join(pending)}")


def up(dc: docker.DockerClient | None = None) -> None:
    """Start the stack; idempotent: existing healthy containers are left alone, changed ones recreated."""
    dc = dc or client()
    ensure_images(dc)
    try:
        dc.networks.get(NETWORK)
    except docker.errors.NotFound:
        dc.networks.create(NETWORK, driver="bridge", labels={"com.docker.compose.project": PROJECT})
    for service in ORDER:
        name = container_name(service)
        try:
            container = dc.containers.get(name)
            if container.labels.get("io.runbook.sandbox.definition") != _definition_hash(service) or (
                container.image.id != dc.images.get(SERVICES[service]["image"]).id
            ):
                container.remove(force=True)
                container = create(dc, service)
        except docker.errors.NotFound:
            container = create(dc, service)
        if container.status != "running":
            container.start()
        if service in ("db", "redis"):
            wait_healthy(dc, [name])
    # Extra replicas (from scaling) go back to one; the stack's shape is the definition's.
    for extra in dc.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        if extra.name not in {container_name(s) for s in ORDER}:
            extra.remove(force=True)
    wait_healthy(dc, [container_name(s) for s in ORDER])


def down(dc: docker.DockerClient | None = None) -> None:
    dc = dc or client()
    for container in dc.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        container.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        dc.networks.get(NETWORK).remove()


def status(dc: docker.DockerClient | None = None) -> list[str]:
    dc = dc or client()
    rows = []
    for container in dc.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        health = container.attrs["State"].get("Health", {}).get("Status", "-")
        rows.append(f"{container.name:20} {container.status:10} health={health}")
    return sorted(rows)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        up()
        print("sandbox up: " + ", ".join(container_name(s) for s in ORDER))
    elif command == "down":
        down()
        print("sandbox removed")
    elif command == "status":
        print("\n".join(status()) or "sandbox not running")
    elif command == "env":
        # For `eval $(python -m sandbox.stack env)` in a shell.
        print("\n".join(f"export {k}='{v}'" for k, v in AGENT_ENV.items()))
    else:
        print(f"usage: python -m sandbox.stack up|down|status|env (got {command!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
