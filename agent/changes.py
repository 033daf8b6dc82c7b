"""A plan is data: Change records naming exact targets, and a fingerprint an approval is bound to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Change", "Plan"]


@dataclass(frozen=True)
class Change:
    """One change to one target, e.g. restart container 3f2a.. (sandbox-app-1): exited -> running."""

    effect: str  # the effect function that applies it, e.g. "docker.container.restart"
    target: str  # stable key for limits and locks, e.g. "container:sandbox-app-1"
    summary: str  # one line for people
    before: Any = None
    after: Any = None
    # Exactly what the applier needs (ids, names, configs); part of what is approved.
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    remediation: str  # the runbook's remediation id
    do: str  # the plugin name
    changes: tuple[Change, ...]

    @property
    def targets(self) -> list[str]:
        return sorted({c.target for c in self.changes})

    @property
    def fingerprint(self) -> str:
        """Changes when anything in the plan changes: an approval names the plan it approves."""
        canonical = json.dumps(
            {"do": self.do, "changes": [c.to_json() for c in self.changes]}, sort_keys=True, default=str
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "changes": [c.to_json() for c in self.changes]}
