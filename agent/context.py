"""Per-run clients for Docker, PostgreSQL and Redis: made once, with explicit timeouts, closed at the end."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from agent import alarms
from agent.config import Settings
from agent.exceptions import TargetUnreachable

if TYPE_CHECKING:
    from agent.inflight import InFlight

__all__ = ["ApplyContext", "CheckContext", "PlanContext", "RunClients", "Watchdog"]

T = TypeVar("T")
# docker_host -> the API version negotiated with it, once per process (an engine upgraded in place still
# speaks it; one downgraded below it refuses every call until the daemon restarts and negotiates again).
_NEGOTIATED: dict[str, str] = {}

# A check's watchdog: given what to call at its deadline, a context the watched call runs in.
Watchdog = Callable[[Callable[[], None]], AbstractContextManager[None]]


def _engine_ca_wins(session: Any) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override a session's own CA
    (psf/requests#3829): with them set, a TLS engine's CA would be ignored for the system's and every
    call would fail verification. The session's CA is put back after the environment is merged; proxies
    and the rest still come from the environment."""
    merge = session.merge_environment_settings

    def merged(url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = merge(url, proxies, stream, verify, cert)
        settings["verify"] = session.verify
        return settings

    session.merge_environment_settings = merged


class RunClients:
    """Lazily made clients shared by the checks of one run (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._failures: dict[tuple[str, str], TargetUnreachable] = {}
        self._query_locks: dict[str, threading.Lock] = {}
        self._making: dict[tuple[str, str], threading.Lock] = {}
        self._docker_in_flight: InFlight | None = None
        self._redis_in_flight: dict[str, InFlight] = {}
        self._closed = False
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._hosts: dict[str, RunClients] = {}

    def _get(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        # One lock per client being made: a target slow to connect holds up only the checks that need it,
        # never the others nor the end of the run.
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in self._failures:
                    # One failed connect per run is enough; later checks report the same cause fast.
                    raise self._failures[key]
                if key in self._clients:
                    return self._clients[key]
            try:
                client = make()
            except TargetUnreachable as exc:
                with self._lock:
                    self._failures[key] = exc
                raise
            with self._lock:
                if not self._closed:
                    self._clients[key] = client
                    return client
            # The run ended while this (abandoned) check was connecting: nothing will close it later.
            with contextlib.suppress(Exception):
                client.close()
            raise TargetUnreachable("closed", "the run ended before the connection was made")

    def shared(self, key: tuple[Any, ...], make: Callable[[], T], timeout: float = -1) -> T:
        """What several checks of this run read at the same moment (a service's containers, one log
        window): read once, by the first that asks, while the others wait for it. A run's verification
        and final pass get new clients, so nothing read before a change is reused after it."""
        with self._lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        # A check waits for another's read no longer than its own deadline (`timeout`, seconds).
        if not lock.acquire(timeout=timeout):
            raise TimeoutError("waited for another check's read of the same data past this check's deadline")
        try:
            with self._lock:
                if key in self._memo:
                    return self._memo[key]  # type: ignore[no-any-return]
            value = make()  # a failure is not kept: the next check asks again, within its own deadline
            with self._lock:
                self._memo[key] = value
            return value
        finally:
            lock.release()

    def docker(self) -> Any:
        def make() -> Any:
            import docker
            import docker.errors
            import docker.tls
            import requests

            from agent.docker_engine import track
            from agent.ssh_tunnel import TunnelFailed

            engine = self.settings.docker_host or "unix:///var/run/docker.sock"
            base_url = engine
            try:
                forward = self.settings.docker_forward
                if forward is not None:  # ssh://: through the process's forward of the remote socket
                    from agent.ssh_tunnel import local_socket

                    base_url = local_socket(forward, self.settings.connect_timeout + self.settings.read_timeout)
                # A fixed version makes no call here: docker-py would negotiate the API version in the
                # constructor, before its connections can be tracked (and cut at a check's deadline).
                tls: Any = False
                if self.settings.docker_tls:
                    certs = self.settings.docker_certs
                    tls = docker.tls.TLSConfig(
                        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
                        ca_cert=str(certs / "ca.pem"),
                        verify=True,
                    )
                client = docker.DockerClient(
                    base_url=base_url, timeout=self.settings.read_timeout, version="1.24", tls=tls
                )
                if tls:
                    _engine_ca_wins(client.api)
                self._docker_in_flight = track(client)
                known = _NEGOTIATED.get(engine)
                if known is None:
                    # Negotiate, as docker-py's "auto" does; this call is also the reachability check.
                    known = _NEGOTIATED[engine] = client.api.version(api_version=False)["ApiVersion"]
                # Negotiated by an earlier run of this process: no call here (the engine answers /version
                # by asking containerd, ~6 ms). An engine gone since fails the check's first call, which
                # the Docker checks report as unreachable (checks/docker.py).
                client.api._version = known
            except (docker.errors.DockerException, requests.RequestException, OSError, TunnelFailed) as exc:
                # (OSError: a TLS file that went away, as requests reports it.)
                raise TargetUnreachable("docker_unreachable", f"Docker engine unreachable: {exc}") from None
            return client

        return self._get(("docker", self.settings.docker_host or ""), make)

    def cut_docker(self, thread_id: int) -> None:
        """Shut down the Docker engine connections `thread_id` is waiting on (its check's deadline passed)."""
        if self._docker_in_flight is not None:
            self._docker_in_flight.cut(thread_id)

    def postgres(self, dsn: str, *, read_only: bool = False) -> Any:
        """A connection; `read_only` ones run every transaction READ ONLY (see `read_only_query`)."""

        def make() -> Any:
            import psycopg

            try:
                conn = psycopg.connect(
                    dsn,
                    connect_timeout=max(1, round(self.settings.connect_timeout)),
                    autocommit=not read_only,
                    application_name="runbook-agent",
                    # A query that outlives the read timeout is cancelled by the server itself.
                    options=f"-c statement_timeout={int(self.settings.read_timeout * 1000)}",
                )
            except psycopg.OperationalError as exc:
                raise TargetUnreachable("db_unreachable", f"PostgreSQL unreachable: {_first_line(exc)}") from None
            if read_only:
                conn.read_only = True  # each transaction begins with BEGIN READ ONLY, whatever the defaults
            return conn

        return self._get(("postgres-ro" if read_only else "postgres", dsn), make)

    def read_only_query(
        self, dsn: str, sql: str, args: tuple[Any, ...] = (), *, watchdog: Watchdog | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement in its own read-only transaction, then roll it back. The extended protocol
        (binary results) refuses several statements in one string, so a check's SQL cannot end the
        transaction and write after it: checks and plans only ever read. With a `watchdog` (a check's),
        the connection is cut at the deadline — once this statement holds it, never another's — and
        dropped, so the run's next query connects afresh."""
        with self._lock_for(dsn):
            # Taken under the lock: a check cut at its deadline drops the connection it held, and the next
            # statement must run on a new one, not on the one that check's cut has just shut.
            conn = self.postgres(dsn, read_only=True)
            guard = watchdog(lambda: self._cut_postgres(dsn, conn)) if watchdog else contextlib.nullcontext()
            try:
                with guard, conn.cursor() as cur:
                    cur.execute(sql, args, binary=True)
                    return list(cur.fetchall()) if cur.description else []
            finally:
                if not conn.closed and not conn.broken:
                    with contextlib.suppress(Exception):
                        conn.rollback()

    def _cut_postgres(self, dsn: str, conn: Any) -> None:
        # psycopg has no read timeout of its own, and statement_timeout needs a server that still runs.
        with self._lock:
            if self._clients.get(("postgres-ro", dsn)) is conn:
                del self._clients[("postgres-ro", dsn)]
        with contextlib.suppress(Exception):
            handle = socket.socket(fileno=os.dup(conn.fileno()))
            handle.shutdown(socket.SHUT_RDWR)
            handle.close()

    def _lock_for(self, dsn: str) -> threading.Lock:
        # Checks run concurrently on one connection; a transaction per statement must not interleave.
        with self._lock:
            return self._query_locks.setdefault(dsn, threading.Lock())

    def redis(self, url: str) -> Any:
        def make() -> Any:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            from agent.inflight import InFlight

            in_flight = self._redis_in_flight.setdefault(url, InFlight(lambda conn: conn.disconnect()))

            class Pool(redis.ConnectionPool):  # notes which thread has which connection
                def make_connection(self) -> Any:
                    # Noted before it connects: the handshake can be dripped too.
                    conn = super().make_connection()
                    in_flight.checked_out(conn)
                    return conn

                def get_connection(self, *args: Any, **kwargs: Any) -> Any:
                    conn = super().get_connection(*args, **kwargs)
                    in_flight.checked_out(conn)
                    return conn

                def release(self, connection: Any) -> None:
                    in_flight.returned(connection)
                    super().release(connection)

            pool = Pool.from_url(
                url,
                socket_connect_timeout=self.settings.connect_timeout,
                socket_timeout=self.settings.read_timeout,
                decode_responses=True,
                # No silent retries: a check reports what it saw, within its deadline, once.
                retry=Retry(NoBackoff(), 0),
            )
            return redis.Redis(connection_pool=pool)

        return self._get(("redis", url), make)

    def cut_redis(self, url: str, thread_id: int) -> None:
        """Disconnect the Redis connections `thread_id` is waiting on (its check's deadline passed)."""
        if url in self._redis_in_flight:
            self._redis_in_flight[url].cut(thread_id)

    def on(self, host: str | None) -> RunClients:
        """This run's clients on an engine of the inventory (None: the default engine). Each engine's
        are its own, made when first used: a dead engine fails only the checks on it, within its own
        timeouts."""
        if host is None:
            return self
        with self._lock:
            if self._closed:
                raise TargetUnreachable("closed", "the run ended")
            child = self._hosts.get(host)
            if child is None:
                child = self._hosts[host] = RunClients(self.settings.engine_settings(host))
        return child

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            hosts = list(self._hosts.values())
            self._clients.clear()
            self._hosts.clear()
            self._closed = True
        for child in hosts:
            child.close()
        for client in clients:
            # Closing is best effort: the run is over and its results are already recorded.
            with contextlib.suppress(Exception):
                client.close()


class CheckContext:
    """What a check may use: the run's clients, settings and its own time budget. Read-only by intent."""

    def __init__(self, clients: RunClients, timeout: float, deadline: float | None = None) -> None:
        self.clients = clients
        self.settings = clients.settings
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else time.monotonic() + timeout

    def remaining(self) -> float:
        """Seconds left before the check's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    @contextlib.contextmanager
    def watchdog(self, on_expire: Callable[[], None]) -> Iterator[None]:
        """Call `on_expire` (which closes the sockets the block waits on) if the block is still running at
        the check's deadline: a server that answers one byte at a time cannot hold the check past it,
        whatever the per-read timeouts."""
        alarm = alarms.at(self.deadline, on_expire)
        try:
            yield
        finally:
            alarm.cancel()  # once this returns, `on_expire` has run to its end or never will


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReadOnlyDocker:
    """What a plan may learn from the Docker engine: snapshots (inspect data), never objects that act."""

    def __init__(self, clients: RunClients) -> None:
        self._clients = clients

    def containers(self, *, labels: list[str] | None = None, name: str | None = None) -> list[dict[str, Any]]:
        import docker  # the package before its modules (see tests/unit/test_imports.py)
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
        import docker  # the package before its modules (see tests/unit/test_imports.py)
        import docker.errors

        try:
            return dict(self._clients.docker().api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None

    def images(self, repository: str) -> list[dict[str, Any]]:
        client = self._clients.docker()
        return [dict(client.api.inspect_image(i["Id"])) for i in client.api.images(name=repository)]

    def swarm_service(self, name: str) -> dict[str, Any] | None:
        """The Swarm service named exactly `name` (the engine would also take an id or a unique prefix of
        one: a name a runbook or an alert gives never reaches another service that way)."""
        import docker  # the package before its modules (see tests/unit/test_imports.py)
        import docker.errors

        client = self._clients.docker()
        try:
            if not client.info().get("Swarm", {}).get("ControlAvailable"):
                return None
            found = dict(client.api.inspect_service(name))
        except docker.errors.NotFound:
            return None
        return found if (found.get("Spec") or {}).get("Name") == name else None


class ReadOnlySQL:
    """Queries for plans, on a connection the server itself holds read-only."""

    def __init__(self, clients: RunClients, dsn: str) -> None:
        self._clients, self._dsn = clients, dsn

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._clients.read_only_query(self._dsn, sql, args)


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
