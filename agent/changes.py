"""A plan is data: Change records naming exact targets, and a fingerprint an approval is bound to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["Change", "EffectSpec", "Plan", "server_of"]


class EffectSpec(BaseModel):
    """Base of what a plan hands to one effect: exactly what the applier needs (ids, names, digests), typed
    per effect and validated when the plan is made, so a mismatch fails in a dry run, not mid-incident.
    Secrets are `SecretStr` fields: never shown, recorded or part of the fingerprint; the server a secret
    database URL or DSN names (without its password) is, in the change's summary (see `servers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def servers(self) -> list[str]:
        """The servers the secret fields that are database or Redis URLs, or libpq DSNs, name, without
        their passwords (see `server_of`)."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and (where := server_of(value.get_secret_value())):
                found.append(where)
        return sorted(set(found))


def server_of(secret: str) -> str | None:
    """The server a PostgreSQL URL or libpq DSN, or a Redis URL, names, without its password: read by the
    client library's own parser (what it shows is what the client connects to: a query's dbname or db
    overrides the path). None for anything else (a chat webhook's URL, whose path is its credential), for
    what the parser refuses, and for a URL with an `@` past its host (an unencoded password: its parts
    would be shown as a host or a path)."""
    scheme = secret.partition("://")[0].lower() if "://" in secret else ""
    try:
        if scheme in ("redis", "rediss", "unix"):
            return _redis_server(secret, scheme)
        if scheme in ("postgres", "postgresql") or (not scheme and "=" in secret):
            return _postgres_server(secret)
    except ValueError:
        return None
    return None


def _unambiguous(url: str) -> bool:
    parts = urlsplit(url)
    return "@" not in parts.path + parts.query + parts.fragment


def _postgres_server(dsn: str) -> str | None:
    import psycopg  # the package before its modules (see tests/unit/test_imports.py)
    from psycopg.conninfo import conninfo_to_dict

    if "://" in dsn and not _unambiguous(dsn):
        return None
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return None
    parts.setdefault("port", "5432")
    shown = [f"{k}={parts[k]}" for k in ("host", "hostaddr", "port", "dbname", "user") if parts.get(k)]
    return "postgresql " + " ".join(shown)


def _redis_server(url: str, scheme: str) -> str | None:
    import redis  # noqa: F401 - the package before its modules (see tests/unit/test_imports.py)
    from redis.connection import parse_url

    if not _unambiguous(url):
        return None
    parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    host = f"host={parts.get('host')} port={parts.get('port') or 6379}"
    where = f"socket={parts['path']}" if "path" in parts else host
    user = f" user={parts['username']}" if parts.get("username") else ""
    return f"{scheme} {where} db={parts.get('db', 0)}{user}"


@dataclass(frozen=True)
class Change:
    """One change to one target, e.g. restart container 3f2a.. (sandbox-app-1): exited -> running."""

    effect: str  # the effect function that applies it, e.g. "docker.container.restart"
    target: str  # stable key for limits and locks, e.g. "container:sandbox-app-1"
    summary: str  # one line for people
    before: Any = None
    after: Any = None
    # Part of what is approved; the effect's own model (declared by the remediation for this effect).
    spec: EffectSpec | None = None
    host: str | None = None  # the engine of the inventory it is applied on (None: the default engine)

    def to_json(self) -> dict[str, Any]:
        shown = {
            "effect": self.effect,
            "target": self.target,
            "summary": self.summary,
            "before": self.before,
            "after": self.after,
            "spec": self.spec.model_dump(mode="json") if self.spec is not None else None,
        }
        # Only when there is one: a single-engine plan's fingerprint stays what it was.
        return {**shown, "host": self.host} if self.host is not None else shown


@dataclass(frozen=True)
class Plan:
    remediation: str  # the runbook's remediation id
    do: str  # the plugin name
    changes: tuple[Change, ...]

    @property
    def targets(self) -> list[str]:
        return sorted({c.target for c in self.changes})

    @property
    def hosts(self) -> list[str]:
        """The engines its changes are on, in the plan's order (empty: the default engine only)."""
        return list(dict.fromkeys(c.host for c in self.changes if c.host is not None))

    @property
    def fingerprint(self) -> str:
        """Changes when anything in the plan changes: an approval names the plan it approves."""
        canonical = json.dumps(
            {"do": self.do, "changes": [c.to_json() for c in self.changes]}, sort_keys=True, default=str
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "changes": [c.to_json() for c in self.changes]}
