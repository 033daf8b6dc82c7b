"""Effects for the remediation unit tests: they only record that they ran."""

from __future__ import annotations

import time
from typing import Any

from agent.changes import EffectSpec
from agent.plugins import EffectSet

effects = EffectSet("fake")
applied: list[str] = []
HEALTH = {"value": "CRITICAL"}  # what the fake health check reports; a healing fix sets it OK
DURING: list[Any] = []  # called while an effect runs (to look at the world mid-apply)


class FixSpec(EffectSpec):
    target: str
    fail: bool = False
    heals: bool = False
    sleep: float = 0.0


class OtherSpec(EffectSpec):
    something: str = "else"


@effects.effect("fake.thing.fix", FixSpec)
def fix(ctx: Any, spec: FixSpec) -> dict[str, Any]:
    applied.append(spec.target)
    for call in DURING:
        call()
    time.sleep(spec.sleep)
    if spec.fail:
        raise RuntimeError("effect failed")
    if spec.heals:
        HEALTH["value"] = "OK"
    return {"fixed": spec.target}
