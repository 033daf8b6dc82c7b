"""The environment policy: per environment, plan only or apply, which remediations may run unattended,
which never. It can only tighten what a runbook says."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.exceptions import ConfigError

__all__ = ["EnvironmentPolicy", "load_policy"]


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    mode: Literal["plan", "apply"] = Field("apply", description="plan: nothing is ever applied (staging).")
    auto: list[str] | None = Field(
        None,
        description="If set, only these (`runbook.remediation` ids) run without a person; others need approval.",
    )
    deny: list[str] = Field(
        default_factory=list, description="Never applied: `runbook.remediation` ids or plugin names (postgres.restore)."
    )

    def denies(self, runbook: str, remediation: str, plugin: str) -> bool:
        return f"{runbook}.{remediation}" in self.deny or plugin in self.deny

    def approval(self, runbook: str, remediation: str, declared: str) -> str:
        """The approval in force: a runbook's `auto` stays auto only if this environment allows it."""
        if declared == "manual":
            return "manual"
        if self.auto is not None and f"{runbook}.{remediation}" not in self.auto:
            return "manual"
        return "auto"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: dict[str, EnvironmentPolicy]


def load_policy(path: Path | None, environment: str | None) -> EnvironmentPolicy:
    """The policy of `environment` from the policy file; without a file, the runbooks' own approvals."""
    if path is None:
        if environment:
            raise ConfigError(f"environment {environment!r} given but no policy file (RUNBOOK_POLICY)")
        return EnvironmentPolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        parsed = _File.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not environment:
        raise ConfigError(f"{path}: set RUNBOOK_ENV to one of {', '.join(parsed.environments)}")
    if environment not in parsed.environments:
        raise ConfigError(f"{path}: no environment {environment!r} (known: {', '.join(parsed.environments)})")
    return parsed.environments[environment].model_copy(update={"name": environment})
