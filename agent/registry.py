"""A registry of checks and remediations: an object passed in, loading plugin modules lazily.

Which module holds a family comes from installed packages' entry points (`runbook.checks`,
`runbook.remediations`; the effects that apply remediations: `runbook.effects`, read by agent.apply),
so a check pack is installed with pip, not by editing this project. The built-in families are declared
there the same way; the maps below are their fallback when this project runs uninstalled.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Mapping

from agent.exceptions import ConfigError
from agent.plugins import CheckSpec, PluginSet, RemediationSpec

__all__ = [
    "DEFAULT_CHECK_MODULES",
    "DEFAULT_EFFECT_MODULES",
    "DEFAULT_REMEDIATION_MODULES",
    "PLUGIN_IMPORTS",
    "Registry",
    "UnknownPlugin",
    "families",
    "installed_modules",
]

# family -> module. Importing a module only declares; nothing connects anywhere at import.
DEFAULT_CHECK_MODULES: Mapping[str, str] = {
    "docker": "checks.docker",
    "postgres": "checks.postgres",
    "redis": "checks.redis",
    "host": "checks.host",
    "http": "checks.http",
    "tcp": "checks.tcp",
}
DEFAULT_REMEDIATION_MODULES: Mapping[str, str] = {
    "docker": "remediations.docker",
    "postgres": "remediations.postgres",
    "redis": "remediations.redis",
}
# Loaded only by a live process's applier (agent.apply).
DEFAULT_EFFECT_MODULES: Mapping[str, str] = {
    "docker": "remediations.effects.docker",
    "postgres": "remediations.effects.postgres",
    "redis": "remediations.effects.redis",
}
_BUILTIN = {
    "runbook.checks": DEFAULT_CHECK_MODULES,
    "runbook.remediations": DEFAULT_REMEDIATION_MODULES,
    "runbook.effects": DEFAULT_EFFECT_MODULES,
}
OWN_DISTRIBUTION = "runbook"  # the package whose entry points may declare the built-in families


def installed_modules(group: str, builtin: Mapping[str, str]) -> dict[str, str]:
    """family -> module of an entry-point group, the built-ins included. Two packages claiming one
    family is an error naming both: neither may silently replace the other's checks."""
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for point in entry_points(group=group):
        if point.name in builtin and (point.dist is None or point.dist.name != OWN_DISTRIBUTION):
            owner = point.dist.name if point.dist is not None else "an unknown package"
            raise ConfigError(
                f"{owner} declares the built-in {group} family {point.name!r} ({point.value}); "
                "a pack must use a family name of its own"
            )
        if point.name in found and found[point.name] != point.value:
            raise ConfigError(
                f"two installed packages declare the {group} family {point.name!r}: "
                f"{found[point.name]} and {point.value}; uninstall one"
            )
        found[point.name] = point.value
    for family, module in builtin.items():
        if found.setdefault(family, module) != module:
            raise ConfigError(
                f"an installed package declares the built-in {group} family {family!r} ({found[family]}); "
                "a pack must use a family name of its own"
            )
    return found


@functools.cache
def families(group: str) -> Mapping[str, str]:
    """The installed families of a group, read once per process: a pack installed while the daemon
    runs is taken at its next start, never halfway through a run."""
    return installed_modules(group, _BUILTIN[group])


# Plugin and effects modules are imported one at a time in a process: what a module's import brought in
# (an effects module, which no checks module may) is then its own, never another thread's import.
PLUGIN_IMPORTS = threading.RLock()


def _effects_imported() -> set[str]:
    return {m for m in families("runbook.effects").values() if m in sys.modules}


class UnknownPlugin(KeyError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r} (known: {', '.join(self.known)})"


class Registry:
    def __init__(
        self,
        check_modules: Mapping[str, str] | None = None,
        remediation_modules: Mapping[str, str] | None = None,
    ) -> None:
        """The installed families (entry points), unless the modules are given (tests)."""
        if check_modules is None:
            check_modules = families("runbook.checks")
        if remediation_modules is None:
            remediation_modules = families("runbook.remediations")
        self._check_modules = dict(check_modules)
        self._remediation_modules = dict(remediation_modules)
        self._checks: dict[str, CheckSpec] = {}
        self._remediations: dict[str, RemediationSpec] = {}
        self._loaded: set[str] = set()

    def add_check(self, spec: CheckSpec) -> None:
        if spec.name in self._checks:
            raise ValueError(f"check {spec.name!r} is already registered")
        self._checks[spec.name] = spec

    def add_remediation(self, spec: RemediationSpec) -> None:
        if spec.name in self._remediations:
            raise ValueError(f"remediation {spec.name!r} is already registered")
        self._remediations[spec.name] = spec

    def add_plugins(self, plugins: PluginSet) -> None:
        for check in plugins.checks:
            self.add_check(check)
        for remediation in plugins.remediations:
            self.add_remediation(remediation)

    def _load(self, module_name: str, family: str) -> None:
        """Import a family's module and register all of its plugins, or none of them: the module must
        declare the family it is installed as (so a pack cannot register `docker.*` under a name of
        its own), and importing it must not import an effects module (what can act is the live
        applier's alone)."""
        if module_name in self._loaded:
            return
        # The checks of a run start at once, and the first of a family to run loads it: one at a time, or a
        # second would find the family half-registered and report its own check as failed.
        with PLUGIN_IMPORTS:
            if module_name not in self._loaded:
                self._load_now(module_name, family)

    def _load_now(self, module_name: str, family: str) -> None:
        effects_before = _effects_imported()
        module = importlib.import_module(module_name)
        plugins = getattr(module, "plugins", None)
        if not isinstance(plugins, PluginSet):
            raise ConfigError(f"{module_name}: no `plugins = PluginSet({family!r})` in it")
        if plugins.family != family:
            raise ConfigError(
                f"{module_name} is installed as the family {family!r} but declares PluginSet({plugins.family!r})"
            )
        taken = [c.name for c in plugins.checks if c.name in self._checks]
        taken += [r.name for r in plugins.remediations if r.name in self._remediations]
        if taken:
            raise ConfigError(f"{module_name}: {', '.join(taken)} already registered by another module")
        acting = sorted(_effects_imported() - effects_before)
        if acting:
            raise ConfigError(
                f"importing {module_name} imported {', '.join(acting)}: checks and remediation plans never "
                "load effects (only a live process's applier does)"
            )
        self.add_plugins(plugins)
        self._loaded.add(module_name)  # last: `_load` reads it unlocked, and then the plugins must be there

    def check(self, name: str) -> CheckSpec:
        family = name.split(".", 1)[0]
        if family in self._check_modules:
            self._load(self._check_modules[family], family)
        if name not in self._checks:
            raise UnknownPlugin("check", name, self.check_names())
        return self._checks[name]

    def remediation(self, name: str) -> RemediationSpec:
        family = name.split(".", 1)[0]
        if family in self._remediation_modules:
            self._load(self._remediation_modules[family], family)
        if name not in self._remediations:
            raise UnknownPlugin("remediation", name, self.remediation_names())
        return self._remediations[name]

    def check_names(self) -> list[str]:
        for family, module_name in self._check_modules.items():
            self._load(module_name, family)
        return sorted(self._checks)

    def remediation_names(self) -> list[str]:
        for family, module_name in self._remediation_modules.items():
            self._load(module_name, family)
        return sorted(self._remediations)
