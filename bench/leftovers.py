"""What a `make bench` run leaves behind, which must be nothing: no container, process, thread or temporary
state directory that was not there before it. A benchmark that leaks a daemon or a peer's `psql` skews
the figures after it, and on a shared machine it leaks into whoever runs next.

Taken before and after the run; `strays` names what is new. Containers are compared by name, and only
the bench's own and the sandbox's count (the bench replaces the sandbox's app container, same name, new id,
on purpose; someone else's container on a shared engine is not the bench's). A new process is the bench's
if it carries the run's mark in its environment (every process the bench starts inherits it, and keeps it
when orphaned by a killed peer, whoever reaps it) or still descends from the bench; someone else's
processes, and those the container runtime starts for containers, do not.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["CONTAINER_PREFIXES", "MARK", "TEMP_PREFIXES", "Snapshot", "strays", "take", "wait_for_none"]

TEMP_PREFIXES = ("rbbench-", "rbtest-engine-")  # temporary directories of the bench's own naming
CONTAINER_PREFIXES = ("rbbench-", "sandbox-")  # containers the bench makes (its engines are processes)
MARK = "RUNBOOK_BENCH_RUN"  # in the environment of everything the bench starts


@dataclass(frozen=True)
class Snapshot:
    containers: frozenset[str]
    processes: frozenset[tuple[int, float]]  # (pid, create time): a pid alone may be reused
    threads: frozenset[int]  # idents of this process's threads
    temp: frozenset[str]


def _containers(list_names: Callable[[], Iterable[str]] | None) -> frozenset[str]:
    if list_names is None:
        return frozenset()
    return frozenset(name for name in list_names() if name.startswith(CONTAINER_PREFIXES))


def _temp() -> frozenset[str]:
    root = Path(tempfile.gettempdir())
    try:
        return frozenset(p.name for p in root.iterdir() if p.name.startswith(TEMP_PREFIXES))
    except OSError:
        return frozenset()


def take(list_containers: Callable[[], Iterable[str]] | None = None) -> Snapshot:
    """What is there now. `list_containers` names the engine's containers (all, stopped too). The first
    call marks this process's environment, so that what it starts from then on is known as its own."""
    os.environ.setdefault(MARK, uuid.uuid4().hex)
    processes = set()
    for proc in psutil.process_iter(["create_time"]):
        processes.add((proc.pid, proc.info["create_time"] or 0.0))
    return Snapshot(
        containers=_containers(list_containers),
        processes=frozenset(processes),
        threads=frozenset(t.ident for t in threading.enumerate() if t.ident is not None),
        temp=_temp(),
    )


def _ours(proc: psutil.Process, me: int) -> bool:
    """Started by the bench: it carries the run's mark, or still descends from the bench."""
    try:
        if any(p.pid == me for p in proc.parents()):
            return True
        return proc.environ().get(MARK) == os.environ.get(MARK)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def strays(before: Snapshot, after: Snapshot, *, me: int | None = None) -> list[str]:
    """A line per thing the run left: empty when it left nothing."""
    me = os.getpid() if me is None else me
    found = [f"container {name}" for name in sorted(after.containers - before.containers)]
    for pid, _ in sorted(after.processes - before.processes):
        if pid == me:
            continue
        try:
            proc = psutil.Process(pid)
            if not _ours(proc, me):
                continue
            found.append(f"process {pid}: {' '.join(proc.cmdline())[:200] or proc.name()}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone meanwhile
    alive = {t.ident: t for t in threading.enumerate()}
    for ident in sorted(i for i in after.threads - before.threads if i in alive):
        found.append(f"thread {alive[ident].name}")
    found += [f"temporary directory {tempfile.gettempdir()}/{n}" for n in sorted(after.temp - before.temp)]
    return found


def wait_for_none(
    before: Snapshot, list_containers: Callable[[], Iterable[str]] | None = None, *, within: float = 15.0
) -> list[str]:
    """`strays` after giving what was just stopped `within` seconds to be gone (a terminated daemon exits
    after its shutdown, a removed container's name is freed after the engine's cleanup)."""
    deadline = time.monotonic() + within
    while True:
        found = strays(before, take(list_containers))
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)
