"""A registry of checks and remediations: an object passed in, loading plugin modules lazily."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from agent.plugins import CheckSpec, PluginSet, RemediationSpec

__all__ = ["DEFAULT_CHECK_MODULES", "DEFAULT_REMEDIATION_MODULES", "Registry", "UnknownPlugin"]

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


class UnknownPlugin(KeyError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r} (known: {', '.join(self.known)})"


class Registry:
    def __init__(
        self,
        check_modules: Mapping[str, str] = DEFAULT_CHECK_MODULES,
        remediation_modules: Mapping[str, str] = DEFAULT_REMEDIATION_MODULES,
    ) -> None:
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
