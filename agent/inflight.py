"""Connections in use, by the thread using them: so a check's watchdog can cut exactly the connections
its own thread waits on at its deadline — never another check's — whatever the client library."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["InFlight"]


class InFlight:
    def __init__(self, cut: Callable[[Any], None]) -> None:
        """`cut(conn)` shuts a connection down so a read blocked on it fails at once."""
        self._cut = cut
        self._lock = threading.Lock()
        self._by_thread: dict[int, weakref.WeakSet[Any]] = {}

    def checked_out(self, conn: Any) -> None:
        with self._lock:
            self._by_thread.setdefault(threading.get_ident(), weakref.WeakSet()).add(conn)

    def returned(self, conn: Any) -> None:
        with self._lock:
            for conns in self._by_thread.values():
                conns.discard(conn)

    def cut(self, thread_id: int) -> None:
        """Cut the connections `thread_id` is using."""
        with self._lock:
            conns = list(self._by_thread.pop(thread_id, ()))
        for conn in conns:
            try:
                self._cut(conn)
            except Exception:  # noqa: S112 - best effort: the check is already past its deadline
                continue
