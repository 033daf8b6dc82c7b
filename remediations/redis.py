"""Remediations on Redis queues: pause and resume a BullMQ-style queue (plans only)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from agent.plugin_api import Change, EffectSpec, Params, PlanContext, PluginSet

plugins = PluginSet("redis")


class FlagSpec(EffectSpec):
    url: SecretStr
    key: str
    field: str


class QueueParams(Params):
    url: str = Field(description="Redis URL.")
    queue: str = Field(description="Queue name.")
    key_format: str = Field("bull:{queue}:meta", description="Hash holding the queue's pause flag (BullMQ: meta).")
    field: str = Field("paused", description="Field of that hash set to 1 while paused.")


def _change(ctx: PlanContext, params: QueueParams, pause: bool) -> list[Change]:
    key = params.key_format.replace("{queue}", params.queue)
    paused = ctx.redis(params.url).hget(key, params.field) == "1"
    if paused == pause:
        return []  # already as asked: nothing to change
    verb = "pause" if pause else "resume"
    return [
        Change(
            effect=f"redis.queue.{verb}",
            target=f"queue:{params.queue}",
            summary=f"{verb} queue {params.queue} ({key} {params.field})",
            before="paused" if paused else "running",
            after="paused" if pause else "running",
            spec=FlagSpec(url=SecretStr(params.url), key=key, field=params.field),
        )
    ]


@plugins.remediation("redis.pause_queue", QueueParams, effects={"redis.queue.pause": FlagSpec})
def pause_queue(ctx: PlanContext, params: QueueParams) -> list[Change]:
    """Pause a queue the way BullMQ does (its meta hash's `paused` field): jobs stay, workers stop taking them."""
    return _change(ctx, params, pause=True)


@plugins.remediation("redis.resume_queue", QueueParams, effects={"redis.queue.resume": FlagSpec})
def resume_queue(ctx: PlanContext, params: QueueParams) -> list[Change]:
    """Resume a paused queue."""
    return _change(ctx, params, pause=False)
