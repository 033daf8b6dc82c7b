"""The watchdogs' alarm thread: calls at deadlines, cancels that are final."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from agent import alarms


def test_an_alarm_calls_at_its_deadline_and_a_cancelled_one_never() -> None:
    fired: list[str] = []
    done = threading.Event()
    late = alarms.at(time.monotonic() + 0.2, lambda: (fired.append("late"), done.set()))
    early = alarms.at(time.monotonic() + 0.05, lambda: fired.append("early"))
    cancelled = alarms.at(time.monotonic() + 0.1, lambda: fired.append("cancelled"))
    cancelled.cancel()
    assert done.wait(10)
    time.sleep(0.2)
    assert fired == ["early", "late"]
    assert late.cancelled and early.cancelled  # fired alarms are spent


def test_cancel_waits_for_a_call_under_way() -> None:
    # A watchdog cut that has begun ends before cancel returns: the check's thread, reused for the next
    # check, can never have that next check's connections cut by it.
    started, finished = threading.Event(), threading.Event()

    def slow_cut() -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    alarm = alarms.at(time.monotonic(), slow_cut)
    assert started.wait(10)
    alarm.cancel()
    assert finished.is_set()


def test_a_cancelled_alarm_lets_go_of_what_its_call_holds() -> None:
    class Held:
        def cut(self) -> None:
            pass

    held = Held()
    alarm = alarms.at(time.monotonic() + 3600, held.cut)  # long after the test: still in the heap
    ref = weakref.ref(held)
    del held
    alarm.cancel()
    gc.collect()
    assert ref() is None


def test_the_thread_ends_once_idle_and_starts_again_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A process that ran checks in-process (a test, the bench) keeps no thread once they are done.
    monkeypatch.setattr(alarms, "IDLE_EXIT", 0.1)
    done = threading.Event()
    alarms.at(time.monotonic(), done.set)
    assert done.wait(30)
    deadline = time.monotonic() + 30
    while any(t.name == "watchdogs" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "watchdogs" for t in threading.enumerate())
    again = threading.Event()
    alarms.at(time.monotonic(), again.set)
    assert again.wait(30)
