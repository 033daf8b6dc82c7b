"""Per-run clients for Docker, PostgreSQL and Redis: made once, with explicit timeouts, closed at the end."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from agent.config import Settings
from agent.exceptions import TargetUnreachable

__all__ = ["ApplyContext", "CheckContext", "PlanContext", "RunClients"]


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

    def postgres(self, dsn: str, *, read_only: bool = False) -> Any:
        def make() -> Any:
            import psycopg

            options = f"-c statement_timeout={int(self.settings.read_timeout * 1000)}"
            if read_only:
                options += " -c default_transaction_read_only=on"
            try:
                return psycopg.connect(
                    dsn,
                    connect_timeout=max(1, round(self.settings.connect_timeout)),
                    autocommit=True,
                    application_name="runbook-agent",
                    # A query that outlives the read timeout is cancelled by the server itself.
                    options=options,
                )
            except psycopg.OperationalError as exc:
                raise TargetUnreachable("db_unreachable", f"PostgreSQL unreachable: {_first_line(exc)}") from None

        return self._get(("postgres-ro" if read_only else "postgres", dsn), make)

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


class ReadOnlyDocker:
    """What a plan may learn from the Docker engine: snapshots (inspect data), never objects that act."""

    def __init__(self, clients: RunClients) -> None:
        self._clients = clients

    def containers(self, *, labels: list[str] | None = None, name: str | None = None) -> list[dict[str, Any]]:
        import docker.errors

        client = self._clients.docker()
        if name is not None:
            try:
                return [dict(client.api.inspect_container(name))]
            except docker.errors.NotFound:
                return []
        found = client.api.containers(all=True, filters={"label": labels or []})
        return [dict(client.api.inspect_container(c["Id"])) for c in found]

    def image(self, ref: str) -> dict[str, Any] | None:
        import docker.errors

        try:
            return dict(self._clients.docker().api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None

    def images(self, repository: str) -> list[dict[str, Any]]:
        client = self._clients.docker()
        return [dict(client.api.inspect_image(i["Id"])) for i in client.api.images(name=repository)]

    def swarm_service(self, name: str) -> dict[str, Any] | None:
        import docker.errors

        client = self._clients.docker()
        try:
            if not client.info().get("Swarm", {}).get("ControlAvailable"):
                return None
            return dict(client.api.inspect_service(name))
        except docker.errors.NotFound:
            return None


class ReadOnlySQL:
    """Queries for plans, on a connection the server itself holds read-only."""

    def __init__(self, clients: RunClients, dsn: str) -> None:
        self._clients, self._dsn = clients, dsn

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._clients.postgres(self._dsn, read_only=True)
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []


class ReadOnlyRedis:
    _ALLOWED = frozenset({"hget", "hgetall", "exists", "type", "llen", "zcard", "xlen", "get"})

    def __init__(self, clients: RunClients, url: str) -> None:
        self._clients, self._url = clients, url

    def __getattr__(self, name: str) -> Any:
        if name not in self._ALLOWED:
            raise AttributeError(f"a plan may not call redis {name}")
        return getattr(self._clients.redis(self._url), name)


class PlanContext:
    """What a remediation's plan sees: read-only views of the targets, and the settings."""

    def __init__(self, clients: RunClients) -> None:
        self.settings = clients.settings
        self.docker = ReadOnlyDocker(clients)
        self._clients = clients

    def postgres(self, dsn: str) -> ReadOnlySQL:
        return ReadOnlySQL(self._clients, dsn)

    def redis(self, url: str) -> ReadOnlyRedis:
        return ReadOnlyRedis(self._clients, url)


class ApplyContext:
    """What an effect function gets: the run's real clients. Built only by the live-mode applier."""

    def __init__(self, clients: RunClients) -> None:
        self.clients = clients
        self.settings = clients.settings
