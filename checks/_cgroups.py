"""A local container's CPU and memory counters, read from its cgroup (v1 or v2) the moment they are
needed: the Docker engine's stats API waits a full second for its second CPU sample (its one-shot mode
still does on cgroup v1 engines), while the kernel's counters are there already.

Only for an engine on this host (a Unix socket) and a process that sees the host's /proc and
/sys/fs/cgroup; anything else returns None and the caller asks the engine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Counters", "cpu_pct", "local_engine", "read"]

ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
_UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as a number near 2**63


@dataclass(frozen=True)
class Counters:
    cpu_ns: int  # CPU time the container has used, all cores
    at_ns: int  # when it was read (monotonic)
    memory_used: int  # without the reclaimable page cache, as `docker stats` shows it
    memory_limit: int  # the container's limit, or the host's memory when it has none


def read(pid: int, host_memory: int, container_id: str) -> Counters | None:
    """The counters of the cgroup process `pid` belongs to, or None if they cannot be read here — among
    them when that cgroup is not the container's (a pid seen from another pid namespace)."""
    try:
        paths = _paths(pid, container_id)
        if "cpuacct" in paths and "memory" in paths:  # cgroup v1
            cpu_ns = int((paths["cpuacct"] / "cpuacct.usage").read_text())
            memory = paths["memory"]
            usage = int((memory / "memory.usage_in_bytes").read_text())
            inactive = _stat(memory / "memory.stat").get("total_inactive_file", 0)
            limit = int((memory / "memory.limit_in_bytes").read_text())
        elif "" in paths:  # cgroup v2: one unified hierarchy
            group = paths[""]
            cpu_ns = _stat(group / "cpu.stat")["usage_usec"] * 1000
            usage = int((group / "memory.current").read_text())
            inactive = _stat(group / "memory.stat").get("inactive_file", 0)
            text = (group / "memory.max").read_text().strip()
            limit = _UNLIMITED if text == "max" else int(text)
        else:
            return None
    except (OSError, ValueError, KeyError):
        return None
    at_ns = time.monotonic_ns()
    return Counters(cpu_ns, at_ns, max(0, usage - inactive), host_memory if limit >= _UNLIMITED else limit)


def cpu_pct(first: Counters, second: Counters) -> float:
    """CPU use between two readings, as `docker stats` shows it: 100% is one core busy."""
    elapsed = second.at_ns - first.at_ns
    return 100.0 * max(0, second.cpu_ns - first.cpu_ns) / elapsed if elapsed > 0 else 0.0


def _paths(pid: int, container_id: str) -> dict[str, Path]:
    """Controller -> the process's cgroup directory ("" for the v2 unified hierarchy)."""
    found: dict[str, Path] = {}
    unified = (ROOT / "cgroup.controllers").exists()
    text = (PROC / str(pid) / "cgroup").read_text()
    if container_id not in text:
        raise ValueError("not the container's cgroup")
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            if unified:
                found[""] = ROOT / relative
            continue
        for controller in controllers.split(","):
            found[controller] = ROOT / controller / relative
    return found


def _stat(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def local_engine(docker_host: str | None) -> bool:
    """Whether the engine runs on this host, so that its containers' cgroups are ours to read."""
    return not docker_host or (docker_host.startswith("unix://") and os.path.exists(PROC / "1"))
