"""A target that answers one byte at a time cannot hold a check past its deadline: the check's thread
ends soon after, and `runbook run` exits once it has reported. The slow peers are servers on 127.0.0.1
that speak just enough HTTP or Redis protocol to drip an answer (no real server can be made to)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.status import Status
from sandbox import faults, stack
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration
DRIP_SECONDS = 60  # how long a slow answer would take: far longer than any deadline here


class Dripper:
    """Accepts connections and answers each with `answer`, one byte every 3 s (bounded in time)."""

    def __init__(self, answer: bytes, unix: Path | None = None) -> None:
        self.answer = answer
        self.stop = threading.Event()
        if unix is None:
            self.server = socket.create_server(("127.0.0.1", 0))
            self.port = self.server.getsockname()[1]
        else:
            self.server = socket.socket(socket.AF_UNIX)
            self.server.bind(str(unix))
            self.server.listen()
        self.server.settimeout(0.5)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(4096)  # the request
                end = time.monotonic() + DRIP_SECONDS
                for byte in self.answer:
                    if self.stop.wait(3) or time.monotonic() > end:
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.fixture
def http_dripper() -> Iterator[Dripper]:
    body = b"ok" * 100
    server = Dripper(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    yield server
    server.close()


@pytest.fixture
def redis_dripper() -> Iterator[Dripper]:
    server = Dripper(b"+PONG\r\n" * 20)
    yield server
    server.close()


@pytest.fixture(params=["tcp", "unix"])
def docker_dripper(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Dripper]]:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK"
    if request.param == "tcp":
        server = Dripper(answer)
        host = f"tcp://127.0.0.1:{server.port}"
    else:
        server = Dripper(answer, unix=tmp_path / "docker.sock")
        host = f"unix://{tmp_path / 'docker.sock'}"
    yield host, server
    server.close()


def check_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("check-")]


def test_a_dripping_http_server_is_cut_off_at_the_deadline(probe, http_dripper: Dripper) -> None:
    started = time.monotonic()
    result = probe("http.get", timeout=2, url=f"http://127.0.0.1:{http_dripper.port}/health")
    assert result.status is Status.CRITICAL and result.code in ("timeout", "http_timeout")
    # Before, the thread read on, byte after byte, for as long as the server dripped.
    assert faults.wait_for(lambda: not check_threads(), timeout=15, interval=0.2), check_threads()
    assert time.monotonic() - started < DRIP_SECONDS / 2


def test_a_dripping_redis_is_cut_off_at_the_deadline(probe, redis_dripper: Dripper) -> None:
    started = time.monotonic()
    result = probe("redis.ping", timeout=2, url=f"redis://127.0.0.1:{redis_dripper.port}/0")
    assert result.status is Status.CRITICAL and result.code in ("timeout", "redis_timeout")
    assert faults.wait_for(lambda: not check_threads(), timeout=15, interval=0.2), check_threads()
    assert time.monotonic() - started < DRIP_SECONDS / 2


def test_a_dripping_docker_engine_is_cut_off_at_the_deadline(
    probe, docker_dripper: tuple[str, Dripper], tmp_path: Path
) -> None:
    host, _ = docker_dripper
    settings = load_settings(env={**stack.AGENT_ENV, "DOCKER_HOST": host, "RUNBOOK_STATE_DIR": str(tmp_path)})
    started = time.monotonic()
    result = probe("docker.engine", timeout=2, settings=settings)
    assert result.status is Status.CRITICAL and result.code == "timeout"
    # docker-py bounds each read, not a call: before, the thread read on for as long as the engine dripped.
    assert faults.wait_for(lambda: not check_threads(), timeout=15, interval=0.2), check_threads()
    assert time.monotonic() - started < DRIP_SECONDS / 2


SLOW = """
id: slow-target
title: A target that answers a byte at a time
severity: SEV-3
checks:
  - id: health
    check: http.get
    with: {{url: "http://127.0.0.1:{port}/health"}}
    timeout: 2s
  - id: load
    check: host.load
"""


def test_runbook_run_exits_once_it_has_reported(agent_env, http_dripper: Dripper, tmp_path: Path) -> None:
    directory = tmp_path / "runbooks"
    directory.mkdir()
    (directory / "slow.yaml").write_text(textwrap.dedent(SLOW.format(port=http_dripper.port)))
    started = time.monotonic()
    # Before, the verdict was printed and then the process waited on the check's thread: the whole drip.
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "slow-target", "--runbooks", str(directory)],
        env=agent_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DRIP_SECONDS - 15,
    )
    assert result.returncode == 2 and "Verdict: CRITICAL" in result.stdout, result.stdout + result.stderr
    assert time.monotonic() - started < DRIP_SECONDS - 15


def test_a_frozen_database_is_cut_off_at_the_deadline(dc, tmp_path: Path, restore) -> None:
    from agent.context import CheckContext, RunClients
    from agent.exceptions import TargetUnreachable
    from checks.postgres import QueryParams, query

    dsn = stack.AGENT_ENV["DATABASE_URL"]
    clients = RunClients(load_settings(env={**stack.AGENT_ENV, "RUNBOOK_STATE_DIR": str(tmp_path)}))
    clients.postgres(dsn, read_only=True)  # connected while the server runs
    db = dc.containers.get(stack.container_name("db"))
    db.pause()  # frozen: statement_timeout cannot fire, and psycopg has no read timeout of its own
    outcome: list[BaseException | object] = []

    def check() -> None:
        try:
            outcome.append(query(CheckContext(clients, 2), QueryParams(dsn=dsn)))
        except BaseException as exc:
            outcome.append(exc)

    try:
        worker = threading.Thread(target=check, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive()
    finally:
        db.unpause()
    (error,) = outcome
    assert isinstance(error, TargetUnreachable) and error.code == "db_timeout"
