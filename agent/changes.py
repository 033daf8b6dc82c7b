"""A plan is data: Change records naming exact targets, and a fingerprint an approval is bound to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Change", "EffectSpec", "Plan"]


class EffectSpec(BaseModel):
    """Base of what a plan hands to one effect: exactly what the applier needs (ids, names, digests), typed
    per effect and validated when the plan is made, so a mismatch fails in a dry run, not mid-incident.
    Secrets are `SecretStr` fields: never shown, recorded or part of the fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Change:
    """One change to one target, e.g. restart container 3f2a.. (sandbox-app-1): exited -> running."""

    effect: str  # the effect function that applies it, e.g. "docker.container.restart"
    target: str  # stable key for limits and locks, e.g. "container:sandbox-app-1"
    summary: str  # one line for people
    before: Any = None
    after: Any = None
    # Part of what is approved; the effect's own model (declared by the remediation for this effect).
    spec: EffectSpec | None = None
    host: str | None = None  # the engine of the inventory it is applied on (None: the default engine)

    def to_json(self) -> dict[str, Any]:
        shown = {
            "effect": self.effect,
            "target": self.target,
            "summary": self.summary,
            "before": self.before,
            "after": self.after,
            "spec": self.spec.model_dump(mode="json") if self.spec is not None else None,
        }
        # Only when there is one: a single-engine plan's fingerprint stays what it was.
        return {**shown, "host": self.host} if self.host is not None else shown


@dataclass(frozen=True)
class Plan:
    remediation: str  # the runbook's remediation id
    do: str  # the plugin name
    changes: tuple[Change, ...]

    @property
    def targets(self) -> list[str]:
        return sorted({c.target for c in self.changes})

    @property
    def hosts(self) -> list[str]:
        """The engines its changes are on, in the plan's order (empty: the default engine only)."""
        return list(dict.fromkeys(c.host for c in self.changes if c.host is not None))

    @property
    def fingerprint(self) -> str:
        """Changes when anything in the plan changes: an approval names the plan it approves."""
        canonical = json.dumps(
            {"do": self.do, "changes": [c.to_json() for c in self.changes]}, sort_keys=True, default=str
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "changes": [c.to_json() for c in self.changes]}
