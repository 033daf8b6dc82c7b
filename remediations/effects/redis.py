"""Effects on Redis queues: set or clear a queue's pause flag."""

from __future__ import annotations

from typing import Any

from agent.plugin_api import ApplyContext, EffectSet
from remediations.redis import FlagSpec

effects = EffectSet("redis")


@effects.effect("redis.queue.pause", FlagSpec)
def pause(ctx: ApplyContext, spec: FlagSpec) -> dict[str, Any]:
    ctx.clients.redis(spec.url.get_secret_value()).hset(spec.key, spec.field, "1")
    return {"paused": True}


@effects.effect("redis.queue.resume", FlagSpec)
def resume(ctx: ApplyContext, spec: FlagSpec) -> dict[str, Any]:
    ctx.clients.redis(spec.url.get_secret_value()).hdel(spec.key, spec.field)
    return {"paused": False}
