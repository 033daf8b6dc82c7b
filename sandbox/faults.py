"""Real faults injected into the sandbox stack, for the demo and the integration tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import psycopg
import redis as redis_lib

from sandbox import stack

APP_DSN = f"postgresql://app:app-sandbox@127.0.0.1:{stack.PORTS['db']}/app"


def kill_app(dc: docker.DockerClient) -> None:
    """SIGKILL the app: it exits with code 137, as after an OOM kill or a crash."""
    container = dc.containers.get(stack.container_name("app"))
    container.kill(signal="SIGKILL")
    container.wait(timeout=30)


def stop_db(dc: docker.DockerClient) -> None:
    dc.containers.get(stack.container_name("db")).stop(timeout=10)


def flood_queue(n: int, queue: str = "email") -> None:
    """Push n jobs onto the queue faster than one worker drains it (bounded: n is the count)."""
    client = redis_lib.Redis.from_url(stack.AGENT_ENV["REDIS_URL"])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush(f"bull:{queue}:wait", f"email-{i}")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def clear_queue(queue: str = "email") -> None:
    client = redis_lib.Redis.from_url(stack.AGENT_ENV["REDIS_URL"])
    client.delete(f"bull:{queue}:wait", f"bull:{queue}:failed", f"bull:{queue}:meta")


@contextmanager
def idle_in_transaction(sessions: int) -> Iterator[list[Any]]:
    """Hold `sessions` connections as the app role, each idle inside an open transaction."""
    conns: list[Any] = []
    try:
        for _ in range(sessions):
            conn = psycopg.connect(APP_DSN, connect_timeout=5)
            conn.execute("SELECT 1")  # opens the transaction and leaves it open
            conns.append(conn)
        yield conns
    finally:
        for conn in conns:
            with suppress(psycopg.Error):
                conn.close()


def build_bad_app(dc: docker.DockerClient) -> str:
    """A bad deploy: the app image built to answer 500 on every request to /. Returns its tag."""
    tag = f"{stack.APP_IMAGE}:bad"
    stack.build_image(dc, tag, FAIL_RATIO="1", APP_VERSION="2-bad")
    return tag


def deploy_app(dc: docker.DockerClient, image: str) -> None:
    """Replace the app container with one running `image`, as a deploy would."""
    dc.containers.get(stack.container_name("app")).remove(force=True)
    stack.create(dc, "app", image=image).start()
    stack.wait_healthy(dc, [stack.container_name("app")])


def traffic(n: int, path: str = "/") -> list[int]:
    """n sequential requests to the app (bounded), returning their status codes."""
    codes = []
    for _ in range(n):
        try:
            with urllib.request.urlopen(stack.AGENT_ENV["APP_URL"] + path, timeout=5) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    return codes


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
