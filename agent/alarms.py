"""Calls at deadlines for every check's watchdog, from one thread.

A `threading.Timer` per watchdog started and woke a thread for every check of every run; one thread
with a heap does the same for all of them. `Alarm.cancel` returns only once the call has either run to
its end or will never run, so a watchdog left behind by a finished check can never cut a connection of
whatever its thread does next."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Alarm", "at"]

IDLE_EXIT = 5.0  # seconds with no alarm before the thread ends

_log = logging.getLogger("runbook.alarms")


class Alarm:
    def __init__(self, func: Callable[[], None]) -> None:
        self._func: Callable[[], None] | None = func
        self._lock = threading.Lock()
        self.cancelled = False

    def fire(self) -> None:
        with self._lock:
            func, self._func = self._func, None
            if self.cancelled or func is None:
                return
            self.cancelled = True
            try:
                func()
            except Exception:  # a watchdog's cut is best effort; the alarms go on for everyone else
                _log.exception("a watchdog failed")

    def cancel(self) -> None:
        """Never runs after this returns (waits for a call under way to end). The calls only shut
        sockets down, so nothing waits long."""
        with self._lock:
            self.cancelled = True
            # Dropped now: the call holds what its check used (clients, a log window) until the alarm
            # leaves the heap at its deadline.
            self._func = None


class _Alarms:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, func: Callable[[], None]) -> Alarm:
        alarm = Alarm(func)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), alarm))
            if self._thread is None or not self._thread.is_alive():
                # Started on first use (and again in a forked child, where it does not exist).
                self._thread = threading.Thread(target=self._loop, name="watchdogs", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:
                self._cond.notify()  # earlier than what the thread sleeps towards
        return alarm

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        # Idle for a while: the thread ends (started again by the next `at`), so a process
                        # that ran checks in-process (a test, the bench) keeps no thread once they are done.
                        if not self._cond.wait(IDLE_EXIT) and not self._heap:
                            self._thread = None
                            return
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        alarm = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            alarm.fire()


_ALARMS = _Alarms()


def at(when: float, func: Callable[[], None]) -> Alarm:
    """Call `func` at `when` (time.monotonic()) unless cancelled first."""
    return _ALARMS.at(when, func)
