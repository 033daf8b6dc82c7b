"""What a `make bench` run leaves behind, which must be nothing: no container, process, thread or temporary
state directory that was not there before it. A benchmark that leaks a daemon or a peer's `psql` skews
the figures after it, and on a shared machine it leaks into whoever runs next.

Taken before and after the run; `strays` names what is new. Containers are compared by name: the bench
replaces the sandbox's app container (same name, new id) on purpose. A new process is ours if it descends
from the bench or was orphaned to init (a killed peer's child); processes the container runtime started
for containers (under a containerd shim) are the engine's, counted as containers.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["TEMP_PREFIXES", "Snapshot", "strays", "take", "wait_for_none"]

TEMP_PREFIXES = ("rbbench-",)  # temporary directories of the bench's own naming
_INIT_PIDS = (0, 1)


@dataclass(frozen=True)
class Snapshot:
    containers: frozenset[str]
    processes: frozenset[tuple[int, float]]  # (pid, create time): a pid alone may be reused
    threads: frozenset[int]  # idents of this process's threads
    temp: frozenset[str]


def _containers(list_names: Callable[[], Iterable[str]] | None) -> frozenset[str]:
    return frozenset(list_names()) if list_names is not None else frozenset()


def _temp() -> frozenset[str]:
    root = Path(tempfile.gettempdir())
    try:
        return frozenset(p.name for p in root.iterdir() if p.name.startswith(TEMP_PREFIXES))
    except OSError:
        return frozenset()


def take(list_containers: Callable[[], Iterable[str]] | None = None) -> Snapshot:
    """What is there now. `list_containers` names the engine's containers (all, stopped too)."""
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
    """Started by the bench (still its descendant) or left by it (orphaned to init, not a container's)."""
    try:
        parents = proc.parents()
        if any(p.pid == me for p in parents):
            return True
        parent = proc.ppid()
        return parent in _INIT_PIDS and not proc.name().startswith("containerd-shim")
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
