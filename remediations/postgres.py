"""Remediations on PostgreSQL: end idle-in-transaction sessions, restore from a backup."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.plugins import PluginSet
from agent.schema import Duration

plugins = PluginSet("postgres")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = Field(description="libpq connection string or URL.")


class TerminateIdleParams(_Params):
    older_than: Duration = Field(60.0, description="Only sessions idle in a transaction longer than this.")
    include_superusers: bool = Field(False, description="Also end superusers' sessions.")


plugins.remediation(
    "postgres.terminate_idle",
    TerminateIdleParams,
    effects=("postgres.backend.terminate",),
    doc="End sessions idle in a transaction for longer than N (never the agent's own).",
)


class RestoreParams(_Params):
    backup: str = Field(description="Path of the SQL backup to restore (the guide's db:restore).")


plugins.remediation(
    "postgres.restore",
    RestoreParams,
    effects=("postgres.database.restore",),
    doc="Restore the database from a backup; destructive, manual approval only, dumps the current state first.",
)
