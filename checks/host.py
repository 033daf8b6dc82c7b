"""Checks of the host the agent runs on (psutil): disk, memory, CPU, load average, processes."""

from __future__ import annotations

import os

import psutil
from pydantic import Field

from agent.plugin_api import CheckContext, Duration, Outcome, Params, PluginSet, Status, above

plugins = PluginSet("host")


class DiskParams(Params):
    path: str = Field("/", description="A path on the filesystem to measure.")
    warn_pct: float = Field(80.0, ge=0, le=100)
    crit_pct: float = Field(90.0, ge=0, le=100)


@plugins.check("host.disk", DiskParams)
def disk(ctx: CheckContext, params: DiskParams) -> Outcome:
    """Disk use (%) of the filesystem holding a path."""
    usage = psutil.disk_usage(params.path)
    status = above(usage.percent, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"{params.path}: {usage.percent:.0f}% used, {usage.free / 2**30:.1f} GiB free",
        metrics={"used_pct": usage.percent, "free_bytes": float(usage.free)},
        thresholds={"used_pct": (params.warn_pct, params.crit_pct)},
        code="disk_full" if status is not Status.OK else None,
    )


class MemoryParams(Params):
    warn_pct: float = Field(85.0, ge=0, le=100)
    crit_pct: float = Field(95.0, ge=0, le=100)


@plugins.check("host.memory", MemoryParams)
def memory(ctx: CheckContext, params: MemoryParams) -> Outcome:
    """Memory in use (%), counting reclaimable cache as available."""
    mem = psutil.virtual_memory()
    status = above(mem.percent, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"memory {mem.percent:.0f}% used, {mem.available / 2**30:.1f} GiB available",
        metrics={"used_pct": mem.percent, "available_bytes": float(mem.available)},
        thresholds={"used_pct": (params.warn_pct, params.crit_pct)},
        code="memory_high" if status is not Status.OK else None,
    )


class CpuParams(Params):
    sample: Duration = Field(
        0.25,
        description="How long to measure (psutil's first unsampled reading is meaningless); the run's other"
        " checks go on meanwhile.",
    )
    warn_pct: float = Field(85.0, ge=0, le=100)
    crit_pct: float = Field(95.0, ge=0, le=100)


@plugins.check("host.cpu", CpuParams)
def cpu(ctx: CheckContext, params: CpuParams) -> Outcome:
    """CPU use (%) measured over a short sample (blocking for `sample`, within the check's timeout)."""
    sample = min(params.sample, max(0.1, ctx.timeout / 2))
    pct = psutil.cpu_percent(interval=sample)
    status = above(pct, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"CPU {pct:.0f}% over {sample:g}s",
        metrics={"cpu_pct": pct},
        thresholds={"cpu_pct": (params.warn_pct, params.crit_pct)},
        code="cpu_high" if status is not Status.OK else None,
    )


class LoadParams(Params):
    warn_per_cpu: float = Field(1.5, gt=0, description="5-minute load per CPU for WARNING.")
    crit_per_cpu: float = Field(3.0, gt=0, description="5-minute load per CPU for CRITICAL.")


@plugins.check("host.load", LoadParams)
def load(ctx: CheckContext, params: LoadParams) -> Outcome:
    """Load average, judged per CPU on the 5-minute figure."""
    one, five, fifteen = os.getloadavg()
    cpus = psutil.cpu_count() or 1
    per_cpu = five / cpus
    status = above(per_cpu, params.warn_per_cpu, params.crit_per_cpu)
    return Outcome(
        status,
        f"load {one:.2f} {five:.2f} {fifteen:.2f} on {cpus} CPUs ({per_cpu:.2f} per CPU)",
        metrics={"load1": one, "load5": five, "load15": fifteen, "load5_per_cpu": round(per_cpu, 2)},
        thresholds={"load5_per_cpu": (params.warn_per_cpu, params.crit_per_cpu)},
        code="load_high" if status is not Status.OK else None,
    )


class ProcessParams(Params):
    name: str = Field(description="Process name (as in `ps -e`) or a word of its command line.")
    min: int = Field(1, ge=1, description="Fewer such processes than this is CRITICAL.")


@plugins.check("host.process", ProcessParams)
def process(ctx: CheckContext, params: ProcessParams) -> Outcome:
    """A process is present by name (or command line), at least `min` of them."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == params.name or any(params.name == os.path.basename(a) for a in cmdline[:2]):
            found.append(proc.info["pid"])
    status = Status.OK if len(found) >= params.min else Status.CRITICAL
    return Outcome(
        status,
        f"{len(found)} {params.name} process(es)" + ("" if found else " running"),
        details={"pids": found[:20]},
        metrics={"processes": float(len(found))},
        code="process_missing" if status is not Status.OK else None,
    )
