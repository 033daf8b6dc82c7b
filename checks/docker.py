"""Checks against the Docker engine: engine, container state, replicas, logs, error rate, stats."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, model_validator

from agent.plugin_api import (
    CheckContext,
    Duration,
    Outcome,
    Params,
    PluginSet,
    Status,
    TargetUnreachable,
    above,
    compile_linear,
    compile_linear_bytes,
    read_logs,
    worst,
)
from checks import _cgroups

plugins = PluginSet("docker")

# Log lines read per container at most (the newest in the window): a chatty or hostile container cannot
# make a check read without end.
MAX_LOG_LINES = 20_000
SAMPLE_CHARS = 1_000  # of a matched line, as shown


class Target(Params):
    """A container by name, or every container of a compose service."""

    container: str | None = Field(None, description="Container name or id.")
    service: str | None = Field(None, description="Compose service name (com.docker.compose.service label).")
    project: str | None = Field(None, description="Compose project; default: the configured compose_project.")

    @model_validator(mode="after")
    def _one_target(self) -> Target:
        if (self.container is None) == (self.service is None):
            raise ValueError("give exactly one of container or service")
        return self


def _within_deadline(check: Callable[[CheckContext, Any], Outcome]) -> Callable[[CheckContext, Any], Outcome]:
    """At the check's deadline, the engine connections its thread waits on are shut down: docker-py's
    timeouts bound each read, not a call, and an engine answering a byte at a time would hold it."""

    @functools.wraps(check)
    def bounded(ctx: CheckContext, params: Any) -> Outcome:
        import requests

        owner = threading.get_ident()
        try:
            with ctx.watchdog(lambda: ctx.clients.cut_docker(owner)):
                return check(ctx, params)
        except requests.ConnectionError as exc:  # (TLS failures too: SSLError is one)
            # The engine refused or dropped the connection (a warm process does not ping it first).
            raise TargetUnreachable("docker_unreachable", f"Docker engine unreachable: {exc}") from None
        except OSError as exc:  # a TLS file gone since the client was made, as requests reports it
            raise TargetUnreachable("docker_unreachable", f"Docker engine unreachable: {exc}") from None

    return bounded


def containers(ctx: CheckContext, target: Target, *, running_only: bool = False) -> list[Any]:
    """The containers a target names, ordered by compose container number then name."""
    import docker  # the package before its modules (see tests/unit/test_imports.py)
    import docker.errors

    def listing() -> list[Any]:
        client = ctx.clients.docker()
        if target.container is not None:
            try:
                found = [client.containers.get(target.container)]
            except docker.errors.NotFound:
                return []
            return [c for c in found if c.status == "running"] if running_only else found
        project = target.project or ctx.settings.compose_project
        labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={target.service}"]
        found = client.containers.list(all=not running_only, filters={"label": labels})
        return sorted(found, key=lambda c: (int(c.labels.get("com.docker.compose.container-number", 0) or 0), c.name))

    # The run's checks of one service share one listing (each container inspected once, not per check).
    key = ("containers", target.container, target.project, target.service, running_only)
    return list(ctx.clients.shared(key, listing, ctx.remaining()))


def _running_names(ctx: CheckContext, service: str, project: str | None) -> list[str]:
    """The running containers of a compose service, by name, from the engine's list alone: one call
    however many replicas (a listing that inspects each costs a call per container)."""

    def listing() -> list[str]:
        labels = [
            f"com.docker.compose.project={project or ctx.settings.compose_project}",
            f"com.docker.compose.service={service}",
        ]
        found = ctx.clients.docker().api.containers(filters={"label": labels, "status": "running"})

        def order(c: dict[str, Any]) -> tuple[int, str]:
            number = (c.get("Labels") or {}).get("com.docker.compose.container-number", 0)
            return (int(number or 0) if str(number).isdigit() else 0, _list_name(c))

        return [_list_name(c) for c in sorted(found, key=order)]

    return list(ctx.clients.shared(("running_names", service, project), listing, ctx.remaining()))


def _list_name(container: dict[str, Any]) -> str:
    names = container.get("Names") or ["?"]
    return str(names[0]).lstrip("/")


def _describe(target: Target) -> str:
    return f"container {target.container}" if target.container else f"service {target.service}"


def _missing(target: Target) -> Outcome:
    return Outcome(Status.CRITICAL, f"no container for {_describe(target)}", code="container_missing")


class EngineParams(Params):
    pass


@plugins.check("docker.engine", EngineParams)
@_within_deadline
def engine(ctx: CheckContext, params: EngineParams) -> Outcome:
    """The Docker engine answers: version and number of running containers."""
    client = ctx.clients.docker()
    version = client.version()
    info = client.info()
    return Outcome(
        Status.OK,
        f"Docker {version.get('Version')} reachable, {info.get('ContainersRunning', 0)} containers running",
        details={"version": version.get("Version"), "api_version": version.get("ApiVersion")},
        metrics={"containers_running": float(info.get("ContainersRunning", 0))},
    )


class ContainerParams(Target):
    warn_restarts: int = Field(3, ge=1, description="Restart count from which the result is WARNING.")


def _container_status(container: Any, warn_restarts: int) -> tuple[Status, str, str | None, dict[str, Any]]:
    state = container.attrs["State"]
    health = (state.get("Health") or {}).get("Status")
    restarts = int(container.attrs.get("RestartCount", 0))
    facts = {
        "name": container.name,
        "id": container.id[:12],
        "state": state["Status"],
        "exit_code": state.get("ExitCode"),
        "oom_killed": bool(state.get("OOMKilled")),
        "restart_count": restarts,
        "health": health,
        "image": container.attrs["Config"].get("Image"),
    }
    name = container.name
    if state["Status"] == "restarting":
        return Status.CRITICAL, f"{name} restarting (restarts={restarts})", "container_restarting", facts
    if state["Status"] != "running":
        oom = ", OOMKilled" if facts["oom_killed"] else ""
        return (
            Status.CRITICAL,
            f"{name} {state['Status']} (exit code {state.get('ExitCode')}{oom})",
            "container_not_running",
            facts,
        )
    if health == "unhealthy":
        return Status.CRITICAL, f"{name} running but unhealthy", "container_unhealthy", facts
    if health == "starting":
        return Status.WARNING, f"{name} running, health check starting", "container_starting", facts
    if restarts >= warn_restarts:
        return Status.WARNING, f"{name} running after {restarts} restarts", "container_restarts", facts
    shown = f", {health}" if health else ""
    return Status.OK, f"{name} running{shown}", None, facts


@plugins.check("docker.container", ContainerParams)
@_within_deadline
def container_state(ctx: CheckContext, params: ContainerParams) -> Outcome:
    """State of a container or of every container of a compose service: running/exited/restarting,
    exit code, OOMKilled, restart count and health."""
    found = containers(ctx, params)
    if not found:
        return _missing(params)
    rows = [_container_status(c, params.warn_restarts) for c in found]
    status = worst(r[0] for r in rows)
    bad = [r for r in rows if r[0] is status]
    summary = (
        "; ".join(r[1] for r in bad)
        if status is not Status.OK
        else f"{len(rows)} running: " + ", ".join(r[3]["name"] for r in rows)
    )
    return Outcome(
        status,
        summary,
        details={"containers": [r[3] for r in rows]},
        metrics={"restart_count": float(max(r[3]["restart_count"] for r in rows))},
        code=bad[0][2] if status is not Status.OK else None,
    )


class ReplicasParams(Params):
    service: str = Field(description="Compose service name.")
    project: str | None = Field(None, description="Compose project; default: the configured compose_project.")
    min: int = Field(1, ge=0, description="Fewer running replicas than this is CRITICAL.")
    expected: int | None = Field(None, ge=0, description="Fewer than this (but at least min) is WARNING.")


@plugins.check("docker.replicas", ReplicasParams)
@_within_deadline
def replicas(ctx: CheckContext, params: ReplicasParams) -> Outcome:
    """Running replicas of a compose service, found by its compose project/service labels."""
    names = _running_names(ctx, params.service, params.project)
    count = len(names)
    metrics = {"replicas": float(count)}
    if count < params.min:
        return Outcome(
            Status.CRITICAL,
            f"{count} of service {params.service} running (min {params.min})",
            {"running": names},
            metrics,
            "replicas_below_min",
        )
    if params.expected is not None and count < params.expected:
        return Outcome(
            Status.WARNING,
            f"{count} of service {params.service} running (expected {params.expected})",
            {"running": names},
            metrics,
            "replicas_below_expected",
        )
    return Outcome(Status.OK, f"{count} of service {params.service} running", {"running": names}, metrics)


def engine_time(raw: Any) -> datetime | None:
    """A time as the engine gives it (RFC 3339 in UTC with nanoseconds, "...T13:34:33.123456789Z";
    datetime takes microseconds), or None for none (Go's zero time, "0001-01-01T00:00:00Z")."""
    raw = str(raw or "")
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*Z$", raw)
    if not match or raw.startswith("0001-"):
        return None
    return datetime.fromisoformat(match.group(1) + (match.group(2) or "") + "+00:00")


def _state_time(container: Any, name: str) -> datetime | None:
    return engine_time(container.attrs["State"].get(name))


def _this_run_began(container: Any) -> datetime | None:
    """Where the current process's log lines begin. After a restart: when the previous process ended
    (FinishedAt, before StartedAt) — every line after it is the new process's. Otherwise a little before
    StartedAt: a process's first lines can come before the engine stamps its start."""
    started = _state_time(container, "StartedAt")
    finished = _state_time(container, "FinishedAt")
    if started is None:
        return None
    if finished is not None and finished <= started:
        return finished
    return started - timedelta(seconds=1)


def _log_lines(ctx: CheckContext, target: Target, since: float, across_restarts: bool) -> list[tuple[str, list[bytes]]]:
    """Log lines (UTF-8 bytes: patterns run over them as bytes; a line ends at \n, \r\n or \r, as the
    engine frames them — not at the other separators `str.splitlines` knows) of the target's containers in the window;
    unless `across_restarts`, only since each container last started, so a restart that fixed things is
    not judged by what came before it."""
    window_start = datetime.now(UTC) - timedelta(seconds=since)
    lines: list[tuple[str, list[bytes]]] = []  # per container: its name, its lines
    for container in containers(ctx, target):
        start = window_start
        began = None if across_restarts else _this_run_began(container)
        if began is not None and began > start:
            start = began

        def read(container: Any = container, start: datetime = start) -> list[bytes]:
            # A float: docker-py turns a datetime into whole seconds, which would take in the lines of the
            # second before a restart (from the process that was failing).
            return read_logs(container, since=start.timestamp(), tail=MAX_LOG_LINES).splitlines()

        # Two checks reading the same window of one container (errors, error rate) share one read.
        key = ("logs", container.id, since, across_restarts)
        lines.append((container.name, ctx.clients.shared(key, read, ctx.remaining())))
    return lines


class LogMatchParams(Target):
    pattern: str = Field(description="Regular expression (RE2: linear time) searched in each log line.")
    since: Duration = Field(300.0, description="How far back to read, e.g. 5m.")
    warn: int | None = Field(None, ge=1, description="Matching lines from which the result is WARNING.")
    crit: int | None = Field(1, ge=1, description="Matching lines from which the result is CRITICAL.")
    ignore_case: bool = False
    across_restarts: bool = Field(False, description="Also count lines from before the container last started.")

    @model_validator(mode="after")
    def _compiles(self) -> LogMatchParams:
        compile_linear(self.pattern, ignore_case=self.ignore_case)
        return self


@plugins.check("docker.log_matches", LogMatchParams)
@_within_deadline
def log_matches(ctx: CheckContext, params: LogMatchParams) -> Outcome:
    """Log lines of a container or service matching a regex in the last N minutes (docker logs)."""
    if not containers(ctx, params):
        return _missing(params)
    regex = compile_linear_bytes(params.pattern, ignore_case=params.ignore_case)
    matched = [
        (name, line.decode("utf-8", "replace"))
        for name, lines in _log_lines(ctx, params, params.since, params.across_restarts)
        for line in lines
        if regex.spans(line) is not None
    ]
    status = above(len(matched), params.warn, params.crit)
    window = f"{params.since:g}s"
    summary = f"{len(matched)} lines matching {params.pattern!r} in the last {window}"
    if matched:
        summary += f"; last: {matched[-1][1].strip()[:160]}"
    return Outcome(
        status,
        summary,
        # Cut: a log line is the container's to make as long as it likes, and samples go into the audit
        # log, the run's record, the API and the console.
        details={"samples": [f"{n}: {line[:SAMPLE_CHARS]}" for n, line in matched[-5:]]},
        metrics={"matches": float(len(matched))},
        thresholds={"matches": (params.warn, params.crit)},
        code="log_pattern_found" if status is not Status.OK else None,
    )


# Common/combined log format: `"GET / HTTP/1.1" 500 -` -> the status code.
_ACCESS_STATUS = r'"[A-Z]+ [^"]*" (?P<status>\d{3}) '


class ErrorRateParams(Target):
    window: Duration = Field(300.0, description="How far back to count requests, e.g. 5m.")
    status_pattern: str = Field(
        _ACCESS_STATUS, description="Regex (RE2) with a named group `status` finding the HTTP status in a log line."
    )
    warn_pct: float = Field(1.0, ge=0, le=100, description="5xx share (%) from which the result is WARNING.")
    crit_pct: float = Field(5.0, ge=0, le=100, description="5xx share (%) from which the result is CRITICAL.")
    min_requests: int = Field(10, ge=1, description="Fewer requests than this: too few to judge (OK).")
    across_restarts: bool = Field(False, description="Also count requests from before the container last started.")

    @model_validator(mode="after")
    def _has_status_group(self) -> ErrorRateParams:
        if "status" not in compile_linear(self.status_pattern).groupindex:
            raise ValueError("status_pattern needs a named group (?P<status>...)")
        return self


@plugins.check("docker.error_rate", ErrorRateParams)
@_within_deadline
def error_rate(ctx: CheckContext, params: ErrorRateParams) -> Outcome:
    """Share of 5xx answers over all requests in a window, from the container's request log."""
    if not containers(ctx, params):
        return _missing(params)
    regex = compile_linear_bytes(params.status_pattern)
    status_group = regex.groupindex["status"]
    total = errors = 0
    for _, lines in _log_lines(ctx, params, params.window, params.across_restarts):
        for line in lines:
            spans = regex.spans(line)
            if spans is None:
                continue
            first, end = spans[status_group]
            if first < 0:
                continue  # matched without a status (an optional group): not a request it can judge
            total += 1
            errors += end > first and line[first] == 0x35  # the status starts with "5"
    pct = 100.0 * errors / total if total else 0.0
    metrics = {"requests": float(total), "errors": float(errors), "error_pct": round(pct, 2)}
    window = f"{params.window:g}s"
    if total < params.min_requests:
        return Outcome(Status.OK, f"{total} requests in the last {window}: too few to judge", metrics=metrics)
    status = above(pct, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"error rate {pct:.1f}% ({errors} of {total} requests 5xx in the last {window})",
        metrics=metrics,
        thresholds={"error_pct": (params.warn_pct, params.crit_pct)},
        code="error_rate_high" if status is not Status.OK else None,
    )


CPU_SAMPLE = 0.2  # seconds between two CPU readings: a steady rate, short enough to overlap the other checks


class StatsParams(Target):
    cpu_warn_pct: float | None = Field(80.0, description="CPU % (of the host's CPUs) for WARNING.")
    cpu_crit_pct: float | None = Field(95.0, description="CPU % for CRITICAL.")
    mem_warn_pct: float | None = Field(80.0, description="Memory % of the container's limit for WARNING.")
    mem_crit_pct: float | None = Field(95.0, description="Memory % of the limit for CRITICAL.")


def _from_cgroups(ctx: CheckContext, found: list[Any]) -> list[tuple[float, float, float]] | None:
    """(CPU %, memory %, bytes used) per container from their cgroups: two readings CPU_SAMPLE apart,
    every container's first before anyone's second, while the run's other checks go on."""
    import psutil

    if not _cgroups.local_engine(ctx.settings.docker_host):
        return None
    api = ctx.clients.docker().api
    host_memory = psutil.virtual_memory().total
    pids = [int(api.inspect_container(c.id)["State"]["Pid"] or 0) for c in found]
    first = [_cgroups.read(pid, host_memory, c.id) if pid else None for pid, c in zip(pids, found, strict=True)]
    if any(f is None for f in first):
        return None
    time.sleep(min(CPU_SAMPLE, ctx.remaining() / 2))
    rows = []
    for pid, before, container in zip(pids, first, found, strict=True):
        after = _cgroups.read(pid, host_memory, container.id)
        if after is None or before is None:
            return None
        mem_pct = 100.0 * after.memory_used / after.memory_limit if after.memory_limit else 0.0
        rows.append((_cgroups.cpu_pct(before, after), mem_pct, float(after.memory_used)))
    return rows


def _usage(stats: dict[str, Any]) -> tuple[float, float, float]:
    cpu, pre = stats["cpu_stats"], stats.get("precpu_stats") or {}
    cpu_delta = cpu["cpu_usage"]["total_usage"] - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
    cpu_pct = 100.0 * cpu_delta / system_delta * cpus if system_delta > 0 and cpu_delta > 0 else 0.0
    memory = stats.get("memory_stats") or {}
    # Page cache is reclaimable; `docker stats` leaves it out too.
    extra = memory.get("stats") or {}
    used = memory.get("usage", 0) - extra.get("total_inactive_file", extra.get("inactive_file", 0))
    limit = memory.get("limit") or 0
    mem_pct = 100.0 * used / limit if limit else 0.0
    return cpu_pct, mem_pct, float(used)


@plugins.check("docker.stats", StatsParams)
@_within_deadline
def stats(ctx: CheckContext, params: StatsParams) -> Outcome:
    """CPU and memory use of a container or service, as `docker stats` shows them: from the containers'
    cgroups when the engine is on this host, else from the engine's stats API."""
    found = containers(ctx, params, running_only=True)
    if not found:
        return Outcome(Status.CRITICAL, f"no running container for {_describe(params)}", code="container_missing")
    usage = _from_cgroups(ctx, found)
    if usage is None:  # a remote engine, or cgroups not visible here: the engine's own one-second sample
        api = ctx.clients.docker().api
        usage = [_usage(api.stats(c.id, stream=False)) for c in found]
    rows = []
    for container, (cpu_pct, mem_pct, used) in zip(found, usage, strict=True):
        status = worst(
            [
                above(cpu_pct, params.cpu_warn_pct, params.cpu_crit_pct),
                above(mem_pct, params.mem_warn_pct, params.mem_crit_pct),
            ]
        )
        rows.append((status, container.name, cpu_pct, mem_pct, used))
    status = worst(r[0] for r in rows)
    top = max(rows, key=lambda r: (r[0].severity, r[2] + r[3]))
    return Outcome(
        status,
        f"{top[1]}: CPU {top[2]:.1f}%, memory {top[3]:.1f}% of limit ({top[4] / 2**20:.0f} MiB)",
        details={"containers": [{"name": r[1], "cpu_pct": round(r[2], 2), "mem_pct": round(r[3], 2)} for r in rows]},
        metrics={"cpu_pct": round(max(r[2] for r in rows), 2), "mem_pct": round(max(r[3] for r in rows), 2)},
        thresholds={
            "cpu_pct": (params.cpu_warn_pct, params.cpu_crit_pct),
            "mem_pct": (params.mem_warn_pct, params.mem_crit_pct),
        },
        code="resource_use_high" if status is not Status.OK else None,
    )
