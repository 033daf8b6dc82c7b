"""The daemon's connection guard (agent.server) on a real uvicorn server, on both HTTP parsers: a request
that does not arrive whole in time is cut off, and past the connection cap the oldest waiting connection
makes room for a new one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from agent.server import guarded_protocol


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] != "/early":  # /early answers without reading the body, as a refusal does
        while (await receive()).get("more_body"):
            pass
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)  # longer than the request deadline: that bounds the request, not the answer
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def serving(parser: str, max_connections: int, request_timeout: float) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _app,
        http=guarded_protocol(max_connections, request_timeout, parser=parser),  # type: ignore[arg-type]
        log_level="critical",
        lifespan="off",
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(20)
        listener.close()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (it sends nothing before)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def request(port: int, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        return answer


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_request_that_does_not_arrive_whole_in_time_is_cut_off(parser: str) -> None:
    with serving(parser, max_connections=50, request_timeout=0.5) as port:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
            assert closed_within(slow, 15)
        assert time.monotonic() - started >= 0.5  # not before its deadline
        # A keep-alive connection gets a new deadline after each answer, not one for its whole life.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            for _ in range(3):
                kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"\r\n\r\nok"):  # headers and body may come apart
                    answer += kept.recv(4096)
                assert answer.startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
            assert closed_within(kept, 15)  # idle past the deadline after its last answer
        assert request(port).startswith(b"HTTP/1.1 200")
        assert request(port, "/slow").startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_past_the_cap_the_oldest_waiting_connection_makes_room(parser: str) -> None:
    with serving(parser, max_connections=3, request_timeout=60) as port:
        waiting = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            waiting.append(s)
            time.sleep(0.05)
        try:
            assert request(port).startswith(b"HTTP/1.1 200")  # a fourth, whole request is answered
            assert closed_within(waiting[0], 15)  # the oldest slow sender made room
            assert not closed_within(waiting[2], 0.2)
        finally:
            for s in waiting:
                s.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_body_sent_after_its_answer_does_not_lift_the_next_deadline(parser: str) -> None:
    # Answered (refused) before its body came; the body then arrives whole, and the next request is
    # dripped: that request still has its deadline, and the connection is closed at it.
    with (
        serving(parser, max_connections=50, request_timeout=1.0) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as s,
    ):
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok"):
            answer += s.recv(4096)
        s.sendall(b"x" * 100)
        s.settimeout(0.3)
        closed, started = False, time.monotonic()
        for part in [b"GET / HTTP/1.1\r\nHost: x\r\n"] + [b"X-Drip: %d\r\n" % i for i in range(40)]:
            try:
                s.sendall(part)
                if s.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "the dripped request outlived its deadline"
        assert time.monotonic() - started < 10


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_request_head_past_the_limit_is_refused(parser: str) -> None:
    with serving(parser, max_connections=50, request_timeout=30) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            # 64 KiB of headers that never end (MAX_HEAD is 16 KiB; h11 has the same limit of its own):
            # refused long before the request's deadline (30 s), not kept in memory until then.
            head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
                b"X-Big-%d: %s\r\n" % (i, b"a" * 1000) for i in range(64)
            )
            with contextlib.suppress(OSError):  # closed while it was sent: refused
                s.sendall(head)
            answer, closed = b"", False
            try:
                while chunk := s.recv(4096):
                    answer += chunk
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                pass
            assert closed and not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert request(port).startswith(b"HTTP/1.1 200")  # the server goes on
