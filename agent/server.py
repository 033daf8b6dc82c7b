"""Serves the daemon's API: uvicorn's HTTP protocol (httptools, the C parser uvicorn prefers; h11 where
it is missing) with what a daemon on a network needs against slow and many connections — a cap on open
connections and a deadline for each request to arrive whole."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Mapping
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "ACCEPT_BATCH",
    "MAX_HEAD",
    "connection_budget",
    "guarded_protocol",
    "over_unix_socket",
    "quiet_accept_errors",
]

_log = logging.getLogger("runbook.server")
_RESERVED_FDS = 128  # for the state store, the audit log, clients of checks and remediations
MAX_HEAD = 16 * 1024  # bytes of a request's target and headers, as h11's default limit
# asyncio accepts up to `backlog` connections per loop tick, before any protocol sees one (and before the
# connection cap can close any): a small batch keeps the descriptors in flight bounded.
ACCEPT_BATCH = 32


def connection_budget(max_connections: int) -> int:
    """How many connections may be open at once: the configured cap, within what this process's limit on
    open files leaves after its own needs and the accepts in flight (a few ticks' batches). The soft
    limit is raised to the hard one first. Never reaching the limit matters: asyncio logs an accept that
    fails with EMFILE once per pending connection, with a traceback, in a tight loop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(8, min(max_connections, soft - _RESERVED_FDS - 4 * ACCEPT_BATCH))


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Turn the event loop's per-attempt accept errors into one line a minute (defence in depth: with
    the connection budget they should not happen at all)."""
    throttled = _Throttled("could not accept %d connections (out of file descriptors)")
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            throttled.note()
        elif default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _Throttled:
    """One warning per interval with a count, never one per event: a flood of refusals must not become a
    flood of log lines."""

    def __init__(self, message: str, interval: float = 60.0) -> None:
        self.message, self.interval = message, interval
        self._count, self._last = 0, 0.0

    def note(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            _log.warning(self.message, self._count)
            self._count, self._last = 0, now


def guarded_protocol(
    max_connections: int, request_timeout: float, *, parser: Literal["httptools", "h11"] = "httptools"
) -> type[Any]:
    """A protocol class for uvicorn (`http=`): on httptools' parser (C, what uvicorn itself prefers) or
    h11's (pure Python, the same behaviour: the guard's tests run on both). Beyond
    `max_connections` open connections, a new one closes the oldest connection still waiting for its
    request (a slow sender) — or, if every connection is busy with a request, the new one. A request
    (headers and body) must arrive within `request_timeout` of the connection opening or of the previous
    response."""
    fast = parser == "httptools"
    base: Any = HttpToolsProtocol if fast else H11Protocol
    evicted = _Throttled("closed %d slow connections to make room (connection limit reached)")
    refused = _Throttled("refused %d connections (connection limit reached, all busy)")
    timed_out = _Throttled("closed %d connections whose request did not arrive in time")

    class GuardedProtocol(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _waiting_since: float = 0.0
        _local = False  # over the local Unix socket: this user's own command, never evicted for room

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            self._local = sock is not None and sock.family == socket.AF_UNIX
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # Served from sockets handed to uvicorn (`sockets=`, for the local Unix socket beside TCP),
                # connections came without it: each small response waited ~40 ms for a delayed ACK (Nagle).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._await_request()
            if len(self.connections) > max_connections:
                self._make_room()

        def _make_room(self) -> None:
            waiting = [
                c
                for c in self.connections
                if isinstance(c, GuardedProtocol) and c._deadline is not None and not c._local
            ]
            victim = min(waiting, key=lambda c: c._waiting_since, default=None)
            if self._local and (victim is None or victim is self):
                return  # a handed-over run is never cut off unseen (the command would not know if it ran)
            if victim is None or victim is self:
                refused.note()
                self._close()
                return
            evicted.note()
            victim._close()

        def _close(self) -> None:
            self._cancel_deadline()
            self.connections.discard(self)
            self.transport.abort()  # frees the descriptor now; a polite close could wait on the peer

        def _await_request(self) -> None:
            self._cancel_deadline()
            self._waiting_since = time.monotonic()
            self._deadline = self.loop.call_later(request_timeout, self._request_late)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _request_late(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                timed_out.note()
                self._close()

        if fast:
            _head = 0  # bytes of this request's target and headers so far

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._head = 0

            def on_url(self, url: bytes) -> None:
                self._count_head(len(url))
                super().on_url(url)

            def on_header(self, name: bytes, value: bytes) -> None:
                self._count_head(len(name) + len(value))
                super().on_header(name, value)

            def _count_head(self, size: int) -> None:
                # httptools sets no limit of its own on a request's head (h11 stops at 16 KiB): one that
                # goes past MAX_HEAD stops the parser, and uvicorn answers 400 and closes.
                self._head += size
                if self._head > MAX_HEAD:
                    raise ValueError("request head too large")

            def on_message_complete(self) -> None:
                answered = self.cycle is not None and self.cycle.response_complete
                super().on_message_complete()
                if not answered:
                    # The whole request is here. (One answered before its body came — a refusal that
                    # did not read it — already waits for the next request, against a new deadline.)
                    self._cancel_deadline()

        else:

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                    self._cancel_deadline()  # the whole request is here (or the connection is over)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

    return GuardedProtocol


def over_unix_socket(scope: Mapping[str, Any]) -> bool:
    """Whether an ASGI request came over a Unix socket: uvicorn names its server (path, None), a TCP
    listener's (host, port)."""
    server = scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and server[1] is None
