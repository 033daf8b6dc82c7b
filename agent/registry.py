"""A registry of checks and remediations: an object passed in, loading plugin modules lazily.

Which module holds a family comes from installed packages' entry points (`runbook.checks`,
`runbook.remediations`; the effects that apply remediations: `runbook.effects`, read by agent.apply),
so a check pack is installed with pip, not by editing this project. The built-in families are declared
there the same way; the maps below are their fallback when this project runs uninstalled.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from agent.exceptions import ConfigError
from agent.plugins import CheckSpec, PluginSet, RemediationSpec

__all__ = [
    "DEFAULT_CHECK_MODULES",
    "DEFAULT_REMEDIATION_MODULES",
    "Registry",
    "UnknownPlugin",
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


def installed_modules(group: str, builtin: Mapping[str, str]) -> dict[str, str]:
    """family -> module of an entry-point group, the built-ins included. Two packages claiming one
    family is an error naming both: neither may silently replace the other's checks."""
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for point in entry_points(group=group):
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
            check_modules = installed_modules("runbook.checks", DEFAULT_CHECK_MODULES)
        if remediation_modules is None:
            remediation_modules = installed_modules("runbook.remediations", DEFAULT_REMEDIATION_MODULES)
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

    def _load(self, module_name: str) -> None:
        if module_name in self._loaded:
            return
        module = importlib.import_module(module_name)
        self._loaded.add(module_name)
        self.add_plugins(module.plugins)

    def check(self, name: str) -> CheckSpec:
        family = name.split(".", 1)[0]
        if family in self._check_modules:
            self._load(self._check_modules[family])
        if name not in self._checks:
            raise UnknownPlugin("check", name, self.check_names())
        return self._checks[name]

    def remediation(self, name: str) -> RemediationSpec:
        family = name.split(".", 1)[0]
        if family in self._remediation_modules:
            self._load(self._remediation_modules[family])
        if name not in self._remediations:
            raise UnknownPlugin("remediation", name, self.remediation_names())
        return self._remediations[name]

    def check_names(self) -> list[str]:
        for module_name in self._check_modules.values():
            self._load(module_name)
        return sorted(self._checks)

    def remediation_names(self) -> list[str]:
        for module_name in self._remediation_modules.values():
            self._load(module_name)
        return sorted(self._remediations)
