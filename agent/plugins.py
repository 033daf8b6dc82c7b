"""The plugin contract: what a check or remediation module declares, and what a check returns."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agent.status import Status

if TYPE_CHECKING:
    from agent.context import CheckContext

__all__ = ["CheckFunc", "CheckSpec", "Outcome", "PluginSet", "RemediationSpec"]


@dataclass(frozen=True)
class Outcome:
    """What a check found: status, a one-line summary, details and numbers to graph."""

    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # A stable machine-readable reason for anything not OK (e.g. "container_not_running").
    code: str | None = None


P = TypeVar("P", bound=BaseModel)
CheckFunc = Callable[["CheckContext", Any], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    params: type[BaseModel]
    func: CheckFunc
    doc: str


@dataclass(frozen=True)
class RemediationSpec:
    name: str
    params: type[BaseModel]
    # What it changes in the world, e.g. ("docker.container.restart",). None declared: never applicable.
    effects: tuple[str, ...]
    doc: str


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

    def remediation(self, name: str, params: type[P], *, effects: tuple[str, ...], doc: str) -> None:
        self.remediations.append(RemediationSpec(self._name(name), params, effects, doc))
