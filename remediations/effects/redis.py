"""Effects on Redis queues: set or clear a queue's pause flag."""

from __future__ import annotations

from typing import Any

from agent.changes import Change
from agent.context import ApplyContext
from agent.plugins import EffectSet

effects = EffectSet("redis")


@effects.effect("redis.queue.pause")
def pause(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    ctx.clients.redis(change.spec["url"]).hset(change.spec["key"], change.spec["field"], "1")
    return {"paused": True}


@effects.effect("redis.queue.resume")
def resume(ctx: ApplyContext, change: Change) -> dict[str, Any]:
    ctx.clients.redis(change.spec["url"]).hdel(change.spec["key"], change.spec["field"])
    return {"paused": False}
