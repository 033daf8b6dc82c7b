"""Checks against Redis: ping, memory against maxmemory, queue depth, failed jobs (BullMQ-style keys)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import Field

from agent.plugin_api import CheckContext, Outcome, Params, PluginSet, Status, TargetUnreachable, above

plugins = PluginSet("redis")
T = TypeVar("T")


class _Params(Params):
    url: str = Field(description="Redis URL, e.g. redis://:password@host:6379/0 (password always masked).")


def _call(ctx: CheckContext, url: str, op: Callable[[Any], T]) -> T:
    """One Redis call within the check's deadline: at the deadline the client's connections are shut
    down, so a server answering a byte at a time cannot hold the check past it."""
    import redis

    client = ctx.clients.redis(url)
    owner = threading.get_ident()
    try:
        with ctx.watchdog(lambda: ctx.clients.cut_redis(url, owner)):
            return op(client)
    except redis.TimeoutError:
        raise TargetUnreachable("redis_timeout", "Redis timed out") from None
    except Exception as exc:
        if ctx.remaining() <= 0:
            # Cut off by the watchdog: whatever the client raised as its socket closed under it.
            raise TargetUnreachable("redis_timeout", "Redis gave no complete answer in time") from None
        if isinstance(exc, redis.ConnectionError):
            raise TargetUnreachable("redis_unreachable", f"Redis unreachable: {exc}") from None
        raise


class PingParams(_Params):
    pass


@plugins.check("redis.ping", PingParams)
def ping(ctx: CheckContext, params: PingParams) -> Outcome:
    """Redis answers PING."""
    _call(ctx, params.url, lambda r: r.ping())
    version = _call(ctx, params.url, lambda r: r.info("server").get("redis_version"))
    return Outcome(Status.OK, f"Redis {version} answers PING", details={"version": version})


class MemoryParams(_Params):
    warn_pct: float = Field(80.0, ge=0, le=100, description="used_memory as % of maxmemory for WARNING.")
    crit_pct: float = Field(95.0, ge=0, le=100, description="used_memory as % of maxmemory for CRITICAL.")


@plugins.check("redis.memory", MemoryParams)
def memory(ctx: CheckContext, params: MemoryParams) -> Outcome:
    """Memory used against maxmemory (no maxmemory set: reported, never WARNING)."""
    info = _call(ctx, params.url, lambda r: r.info("memory"))
    used, limit = int(info["used_memory"]), int(info.get("maxmemory", 0))
    metrics = {"used_bytes": float(used), "maxmemory_bytes": float(limit)}
    if not limit:
        return Outcome(Status.OK, f"{used / 2**20:.1f} MiB used, no maxmemory set", metrics=metrics)
    pct = 100.0 * used / limit
    metrics["used_pct"] = round(pct, 1)
    status = above(pct, params.warn_pct, params.crit_pct)
    return Outcome(
        status,
        f"{used / 2**20:.1f} MiB of {limit / 2**20:.0f} MiB maxmemory ({pct:.0f}%)",
        metrics=metrics,
        thresholds={"used_pct": (params.warn_pct, params.crit_pct)},
        code="redis_memory_high" if status is not Status.OK else None,
    )


def _length(client: Any, key: str) -> tuple[str, int]:
    kind = client.type(key)
    if kind == "list":
        return kind, int(client.llen(key))
    if kind == "stream":
        return kind, int(client.xlen(key))
    if kind == "zset":
        return kind, int(client.zcard(key))
    if kind == "set":
        return kind, int(client.scard(key))
    if kind == "none":
        return kind, 0
    raise ValueError(f"key {key!r} is a {kind}, not a queue (list, stream, sorted set or set)")


class _QueueParams(_Params):
    queue: str = Field(description="Queue name, substituted for {queue} in key_format.")


class QueueDepthParams(_QueueParams):
    key_format: str = Field("bull:{queue}:wait", description="Key holding waiting jobs (list, stream or sorted set).")
    warn: int | None = Field(1000, ge=1, description="Depth from which the result is WARNING.")
    crit: int | None = Field(10000, ge=1, description="Depth from which the result is CRITICAL (guide: 10,000).")


def _key(key_format: str, queue: str) -> str:
    # Plain substitution, not str.format: a queue name with braces must not reach format().
    return key_format.replace("{queue}", queue)


@plugins.check("redis.queue_depth", QueueDepthParams)
def queue_depth(ctx: CheckContext, params: QueueDepthParams) -> Outcome:
    """Jobs waiting in a queue key (list, stream or sorted set); BullMQ's `bull:<queue>:wait` by default."""
    key = _key(params.key_format, params.queue)
    kind, depth = _call(ctx, params.url, lambda r: _length(r, key))
    status = above(depth, params.warn, params.crit)
    return Outcome(
        status,
        f"queue {params.queue}: {depth} jobs waiting ({key}, {kind})",
        details={"key": key, "type": kind},
        metrics={"depth": float(depth)},
        thresholds={"depth": (params.warn, params.crit)},
        code="queue_backed_up" if status is not Status.OK else None,
    )


class FailedJobsParams(_QueueParams):
    key_format: str = Field("bull:{queue}:failed", description="Key holding failed jobs.")
    warn: int | None = Field(1, ge=1, description="Failed jobs from which the result is WARNING.")
    crit: int | None = Field(None, ge=1, description="Failed jobs from which the result is CRITICAL.")


@plugins.check("redis.failed_jobs", FailedJobsParams)
def failed_jobs(ctx: CheckContext, params: FailedJobsParams) -> Outcome:
    """Failed jobs of a queue; BullMQ's `bull:<queue>:failed` sorted set by default."""
    key = _key(params.key_format, params.queue)
    kind, count = _call(ctx, params.url, lambda r: _length(r, key))
    status = above(count, params.warn, params.crit)
    return Outcome(
        status,
        f"queue {params.queue}: {count} failed jobs ({key})",
        details={"key": key, "type": kind},
        metrics={"failed": float(count)},
        thresholds={"failed": (params.warn, params.crit)},
        code="failed_jobs" if status is not Status.OK else None,
    )
