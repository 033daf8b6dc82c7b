"""Per-run clients for Docker, PostgreSQL and Redis: made once, with explicit timeouts, closed at the end."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from agent.config import Settings
from agent.exceptions import TargetUnreachable

__all__ = ["CheckContext", "RunClients"]


class RunClients:
    """Lazily made clients shared by the checks of one run (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._failures: dict[tuple[str, str], TargetUnreachable] = {}

    def _get(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._failures:
                # One failed connect per run is enough; later checks report the same cause fast.
                raise self._failures[key]
            if key not in self._clients:
                try:
                    self._clients[key] = make()
                except TargetUnreachable as exc:
                    self._failures[key] = exc
                    raise
            return self._clients[key]

    def docker(self) -> Any:
        def make() -> Any:
            import docker
            import docker.errors

            try:
                client = docker.DockerClient(
                    base_url=self.settings.docker_host or "unix:///var/run/docker.sock",
                    timeout=self.settings.read_timeout,
                )
                client.ping()
            except docker.errors.DockerException as exc:
                raise TargetUnreachable("docker_unreachable", f"Docker engine unreachable: {exc}") from None
            return client

        return self._get(("docker", self.settings.docker_host or ""), make)

    def postgres(self, dsn: str) -> Any:
        def make() -> Any:
            import psycopg

            try:
                return psycopg.connect(
                    dsn,
                    connect_timeout=max(1, round(self.settings.connect_timeout)),
                    autocommit=True,
                    application_name="runbook-agent",
                    # A query that outlives the read timeout is cancelled by the server itself.
                    options=f"-c statement_timeout={int(self.settings.read_timeout * 1000)}",
                )
            except psycopg.OperationalError as exc:
                raise TargetUnreachable("db_unreachable", f"PostgreSQL unreachable: {_first_line(exc)}") from None

        return self._get(("postgres", dsn), make)

    def redis(self, url: str) -> Any:
        def make() -> Any:
            import redis

            return redis.Redis.from_url(
                url,
                socket_connect_timeout=self.settings.connect_timeout,
                socket_timeout=self.settings.read_timeout,
                decode_responses=True,
            )

        return self._get(("redis", url), make)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                # Closing is best effort: the run is over and its results are already recorded.
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()


class CheckContext:
    """What a check may use: the run's clients, settings and its own time budget. Read-only by intent."""

    def __init__(self, clients: RunClients, timeout: float) -> None:
        self.clients = clients
        self.settings = clients.settings
        self.timeout = timeout


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
