"""The plugin contract: what a check or remediation module declares, and what a check returns."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agent.changes import Change, EffectSpec
from agent.status import Status

if TYPE_CHECKING:
    from agent.context import ApplyContext, CheckContext, PlanContext

__all__ = ["CheckFunc", "CheckSpec", "Effect", "EffectSet", "Outcome", "PluginSet", "RemediationSpec"]


@dataclass(frozen=True)
class Outcome:
    """What a check found: status, a one-line summary, details and numbers to graph."""

    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # A stable machine-readable reason for anything not OK (e.g. "container_not_running").
    code: str | None = None
    # The (warn, crit) levels a metric was judged against, WARNING/CRITICAL at or above them (Nagios
    # perfdata and graphs show them beside the value).
    thresholds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


P = TypeVar("P", bound=BaseModel)
CheckFunc = Callable[["CheckContext", Any], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    params: type[BaseModel]
    func: CheckFunc
    doc: str


PlanFunc = Callable[["PlanContext", Any], list[Change]]
S = TypeVar("S", bound=EffectSpec)
ApplyFunc = Callable[["ApplyContext", Any], dict[str, Any]]


@dataclass(frozen=True)
class RemediationSpec:
    name: str
    params: type[BaseModel]
    plan: PlanFunc
    # What it may change in the world, each effect with the model of what a plan hands it, e.g.
    # {"docker.container.restart": RestartSpec}: a plan may only name these, with these payloads.
    effects: Mapping[str, type[EffectSpec]]
    doc: str
    # Destructive remediations (e.g. a restore) are never automatic, whatever a runbook says.
    manual_only: bool = False


@dataclass(frozen=True)
class Effect:
    name: str
    spec: type[EffectSpec]
    func: ApplyFunc


class PluginSet:
    """The plugins one module declares. Collected here, registered into a Registry object on demand."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.checks: list[CheckSpec] = []
        self.remediations: list[RemediationSpec] = []

    def _name(self, name: str) -> str:
        if name.split(".", 1)[0] != self.family or "." not in name:
            raise ValueError(f"plugin {name!r} must be named '{self.family}.<name>'")
        return name

    def check(self, name: str, params: type[P]) -> Callable[[CheckFunc], CheckFunc]:
        def register(func: CheckFunc) -> CheckFunc:
            # Signature checked when the module is imported, not when an incident needs it.
            if len(inspect.signature(func).parameters) != 2:
                raise TypeError(f"check {name}: expected func(ctx, params), got {func.__name__}")
            doc = inspect.getdoc(func) or ""
            self.checks.append(CheckSpec(self._name(name), params, func, doc))
            return func

        return register

    def remediation(
        self, name: str, params: type[P], *, effects: Mapping[str, type[EffectSpec]], manual_only: bool = False
    ) -> Callable[[PlanFunc], PlanFunc]:
        """Declare a remediation by its planning function; what applies it lives in an effects module."""

        def register(func: PlanFunc) -> PlanFunc:
            if len(inspect.signature(func).parameters) != 2:
                raise TypeError(f"remediation {name}: expected plan(ctx, params), got {func.__name__}")
            if not effects:
                raise ValueError(f"remediation {name}: declares no effects, so it could never be applied")
            doc = inspect.getdoc(func) or ""
            self.remediations.append(RemediationSpec(self._name(name), params, func, dict(effects), doc, manual_only))
            return func

        return register


class EffectSet:
    """Effect functions of one system. Only the executor's applier, built in live mode, loads these."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.effects: list[Effect] = []

    def effect(
        self, name: str, spec: type[S]
    ) -> Callable[[Callable[[ApplyContext, S], dict[str, Any]]], Callable[[ApplyContext, S], dict[str, Any]]]:
        """Declare the function applying `name`; it receives the plan's payload as `spec`, already typed."""

        def register(func: Callable[[ApplyContext, S], dict[str, Any]]) -> Callable[[ApplyContext, S], dict[str, Any]]:
            if not name.startswith(self.family + "."):
                raise ValueError(f"effect {name!r} must be named '{self.family}.<...>'")
            self.effects.append(Effect(name, spec, func))
            return func

        return register
