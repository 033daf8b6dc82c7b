"""Settings: targets (DATABASE_URL, REDIS_URL, DOCKER_HOST), paths and timeouts, from env and a config file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.exceptions import ConfigError
from agent.paths import default_state_dir
from agent.schema import Duration, DurationOrZero

__all__ = ["ENV_VARS", "Settings", "load_settings"]

# Environment variable -> setting. The environment wins over the config file.
ENV_VARS: dict[str, str] = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "DOCKER_HOST": "docker_host",
    "RUNBOOK_DIR": "runbooks_dir",
    "RUNBOOK_AUDIT_LOG": "audit_log",
    "RUNBOOK_STATE_DIR": "state_dir",
    "RUNBOOK_COMPOSE_PROJECT": "compose_project",
    "RUNBOOK_POLICY": "policy_file",
    "RUNBOOK_ENV": "environment",
    "RUNBOOK_BACKUP_DIR": "backup_dir",
}


def _default_state_dir() -> Path:
    return default_state_dir()


class Settings(BaseModel):
    """What the agent talks to and where it writes. Every field can come from the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(None, description="PostgreSQL DSN (DATABASE_URL).")
    redis_url: str | None = Field(None, description="Redis URL (REDIS_URL).")
    docker_host: str | None = Field(None, description="Docker engine (DOCKER_HOST); default: the local socket.")
    compose_project: str = Field("sandbox", description="Compose project whose services runbooks name.")
    runbooks_dir: Path | None = Field(None, description="Where runbooks live (RUNBOOK_DIR).")
    state_dir: Path = Field(default_factory=_default_state_dir, description="State directory.")
    audit_log: Path | None = Field(None, description="Audit log path; default: STATE_DIR/audit.jsonl.")
    connect_timeout: Duration = Field(2.0, gt=0, description="Time to connect to any target (2s).")
    read_timeout: Duration = Field(4.0, gt=0, description="How long to wait for any target's answer (4s).")
    max_parallel_checks: int = Field(8, ge=1, le=64, description="Checks run at once.")
    policy_file: Path | None = Field(None, description="Environment policy file (RUNBOOK_POLICY).")
    environment: str | None = Field(None, description="Which environment of the policy file applies (RUNBOOK_ENV).")
    max_targets_per_run: int = Field(5, ge=1, description="Blast radius: targets one run may change.")
    default_limit: int = Field(3, ge=1, description="Changes per target per limit_window when a runbook sets none.")
    limit_window: Duration = Field(3600.0, gt=0, description="The default rate-limit window (1h).")
    default_cooldown: DurationOrZero = Field(60.0, ge=0, description="A target's rest after a change (1m).")
    lock_ttl: Duration = Field(
        900.0, gt=0, description="A target lock's life if its holder vanishes (renewed while it works)."
    )
    apply_timeout: Duration = Field(120.0, gt=0, description="Time any one effect may take (2m).")
    backup_dir: Path | None = Field(
        None,
        description="Backups postgres.restore may restore from, and where it dumps first; default STATE_DIR/backups.",
    )
    template_env: list[str] = Field(
        default_factory=lambda: ["APP_URL"],
        description="Environment variables runbook templates may read as `env.NAME`; no others are visible.",
    )
    alert_retention: Duration = Field(14 * 86400.0, gt=0, description="Alerts kept this long (14d).")
    run_retention: Duration = Field(90 * 86400.0, gt=0, description="Finished runs kept this long (90d).")

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> Settings:
        if self.connect_timeout > self.read_timeout:
            raise ValueError("connect_timeout must not exceed read_timeout")
        return self

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.state_dir / "audit.jsonl"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def backups_path(self) -> Path:
        return self.backup_dir or self.state_dir / "backups"

    def template_view(self) -> dict[str, Any]:
        """What runbook templates see as `config`."""
        return {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "docker_host": self.docker_host,
            "compose_project": self.compose_project,
        }


def load_settings(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from an optional YAML file (RUNBOOK_CONFIG) overlaid by the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (Path(env["RUNBOOK_CONFIG"]) if env.get("RUNBOOK_CONFIG") else None)
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        values.update(loaded)
    for var, field in ENV_VARS.items():
        if env.get(var):
            values[field] = env[var]
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = str(path) if path else "environment"
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"{where}: {field}: {first['msg']}") from None
