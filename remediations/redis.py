"""Remediations on Redis queues: pause and resume a BullMQ-style queue."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.plugins import PluginSet

plugins = PluginSet("redis")


class QueueParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Redis URL.")
    queue: str = Field(description="Queue name.")
    key_format: str = Field("bull:{queue}:meta", description="Hash holding the queue's pause flag.")
    field: str = Field("paused", description="Field of that hash set to 1 while paused.")


plugins.remediation(
    "redis.pause_queue",
    QueueParams,
    effects=("redis.queue.pause",),
    doc="Pause a queue (e.g. while the email provider is down) the way BullMQ does.",
)
plugins.remediation(
    "redis.resume_queue",
    QueueParams,
    effects=("redis.queue.resume",),
    doc="Resume a paused queue.",
)
