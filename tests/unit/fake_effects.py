"""Effects for the remediation unit tests: they only record that they ran."""

from __future__ import annotations

from typing import Any

from agent.plugins import EffectSet

effects = EffectSet("fake")
applied: list[str] = []
HEALTH = {"value": "CRITICAL"}  # what the fake health check reports; a healing fix sets it OK


@effects.effect("fake.thing.fix")
def fix(ctx: Any, change: Any) -> dict[str, Any]:
    applied.append(change.target)
    if change.spec.get("fail"):
        raise RuntimeError("effect failed")
    if change.spec.get("heals"):
        HEALTH["value"] = "OK"
    return {"fixed": change.target}
