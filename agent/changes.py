"""A plan is data: Change records naming exact targets, and a fingerprint an approval is bound to."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["Change", "EffectSpec", "Plan", "server_of"]


class EffectSpec(BaseModel):
    """Base of what a plan hands to one effect: exactly what the applier needs (ids, names, digests), typed
    per effect and validated when the plan is made, so a mismatch fails in a dry run, not mid-incident.
    Secrets are `SecretStr` fields: never shown, recorded or part of the fingerprint; the server a secret
    database URL or DSN names (without its password) is, in the change's summary (see `servers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def servers(self) -> list[str]:
        """The servers the secret fields that are database or Redis URLs, or libpq DSNs, name: no password,
        no query but the socket directory or port (see `server_of`)."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and (where := server_of(value.get_secret_value())):
                found.append(where)
        return sorted(set(found))


# URLs of these schemes name a server; any other URL may carry its credential in the path (a chat
# webhook's), so it is never shown.
_SERVER_SCHEMES = {"postgres": "postgresql", "postgresql": "postgresql", "redis": "redis", "rediss": "rediss"}
_DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379}
# libpq's key = value: a value quoted ('...', \' and \\ escaped) or not (backslash escapes allowed too).
_LIBPQ_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")
_LIBPQ_SHOWN = ("host", "hostaddr", "port", "dbname", "user")


def server_of(secret: str) -> str | None:
    """`scheme://user@host:port/path` of a PostgreSQL or Redis URL, spelled one way (postgres:// is
    postgresql://, the default port given, Redis's default database /0), or `host=... port=... dbname=...
    user=...` of a libpq key/value DSN; None for anything else."""
    if "://" in secret:
        try:
            url = urlsplit(secret)
            scheme = _SERVER_SCHEMES.get(url.scheme.lower())
            port = url.port or (_DEFAULT_PORTS.get(scheme) if scheme else None)
        except ValueError:
            return None
        if scheme is None:
            return None
        user = f"{url.username}@" if url.username else ""
        host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else url.hostname or ""
        path = url.path if url.path not in ("", "/") or scheme == "postgresql" else "/0"
        # A socket directory or port given in the query (postgresql:///app?host=/run/postgresql) names the
        # server too; nothing else of the query is kept (it may carry a password).
        query = "&".join(f"{k}={v}" for k, v in parse_qsl(url.query) if k in ("host", "port"))
        where = f"{host}:{port}" if host and port else host
        return f"{scheme}://{user}{where}{path}" + (f"?{query}" if query else "")
    pairs = {k: v for k, v in _LIBPQ_PAIR.findall(secret[:4096]) if k in _LIBPQ_SHOWN}
    return " ".join(f"{k}={pairs[k]}" for k in _LIBPQ_SHOWN if k in pairs) or None


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
