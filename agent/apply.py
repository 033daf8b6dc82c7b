"""The applier: the one way a Change reaches the world. Built by the executor of a live process only."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from agent.changes import Change
from agent.config import Settings
from agent.context import ApplyContext, RunClients
from agent.exceptions import ApplyError
from agent.plugins import Effect, EffectSet
from agent.registry import DEFAULT_EFFECT_MODULES, PLUGIN_IMPORTS, families

__all__ = ["DEFAULT_EFFECT_MODULES", "Applier"]


class Applier:
    def __init__(self, settings: Settings, modules: Mapping[str, str] | None = None) -> None:
        # Effects wait on slow things (a container stopping, a health check passing): their own timeout.
        self._settings = settings
        self._clients = RunClients(settings.model_copy(update={"read_timeout": settings.apply_timeout}))
        self._hosts: dict[str, RunClients] = {}
        # The installed families' effects (entry points `runbook.effects`), unless given (tests).
        self._modules = dict(modules if modules is not None else families("runbook.effects"))
        self._effects: dict[str, Effect] = {}

    def _effect(self, name: str) -> Effect:
        if name not in self._effects:
            family = name.split(".", 1)[0]
            if family not in self._modules:
                raise KeyError(f"no effects module for {name!r}")
            with PLUGIN_IMPORTS:  # never while a checks module is imported (see agent.registry)
                module = importlib.import_module(self._modules[family])
            effects = getattr(module, "effects", None)
            # The module must be the family's own: a pack cannot serve `docker.*` effects from another name.
            if not isinstance(effects, EffectSet) or effects.family != family:
                raise KeyError(f"{self._modules[family]} does not declare `effects = EffectSet({family!r})`")
            for effect in effects.effects:
                self._effects.setdefault(effect.name, effect)
            if name not in self._effects:
                raise KeyError(f"unknown effect {name!r}")
        return self._effects[name]

    def apply(self, change: Change) -> dict[str, Any]:
        effect = self._effect(change.effect)
        # The plan was checked against the remediation's declaration; this is the effect's own word.
        if not isinstance(change.spec, effect.spec):
            raise ApplyError(
                f"{change.effect} takes {effect.spec.__name__}, the plan gave {type(change.spec).__name__}"
            )
        return effect.func(ApplyContext(self._on(change.host)), change.spec)

    def _on(self, host: str | None) -> RunClients:
        """The clients of the engine a change is on, with the apply timeout."""
        if host is None:
            return self._clients
        if host not in self._hosts:
            on_host = self._settings.engine_settings(host)
            self._hosts[host] = RunClients(on_host.model_copy(update={"read_timeout": self._settings.apply_timeout}))
        return self._hosts[host]

    def close(self) -> None:
        self._clients.close()
        for clients in self._hosts.values():
            clients.close()
