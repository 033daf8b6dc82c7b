"""Removes secrets (URL/DSN passwords, tokens, params marked secret) from anything shown or recorded."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "Redactor", "secrets_in_url"]

MASK = "***"

# scheme://user:password@host — the password part, whatever the scheme (postgresql, redis, http...).
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]+)(?=@)")
# libpq key/value DSNs and query strings: password=..., also token=, secret=, api_key=.
_KEY_VALUE = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)\s*[=:]\s*)"
    r"(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&,;'\"}]+)",
    re.IGNORECASE,
)
# Environment-style assignments, as in a container's env: DB_PASSWORD=..., STRIPE_API_KEY=...
_ENV_ASSIGNMENT = re.compile(
    r"(?P<pre>\b[A-Za-z0-9_]*(?:PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_KEY)[A-Za-z0-9_]*=)(?P<secret>[^\s,;'\"]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_KEY)", re.IGNORECASE)


def secrets_in_url(url: str) -> list[str]:
    """The password of a URL, raw and percent-decoded (both forms can leak into messages)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password)})


class Redactor:
    """Masks known secret values and secret-shaped substrings in strings and nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self.add(*secrets)

    def add(self, *values: str) -> None:
        found: set[str] = set()
        for value in values:
            # Very short values would mask ordinary words; they are still caught by the patterns.
            if isinstance(value, str) and len(value) >= 4:
                found.add(value)
                found.update(p for p in secrets_in_url(value) if len(p) >= 4)
        # Replaced, never mutated: the daemon's threads may be reading it.
        self._secrets = self._secrets | found

    def add_from_env(self, env: Mapping[str, str]) -> None:
        """Take passwords from URL-valued variables and the values of secret-named variables."""
        for name, value in env.items():
            if _SECRET_ENV.search(name):
                self.add(value)
            elif "://" in value:
                for found in secrets_in_url(value):
                    self.add(found)

    def text(self, value: str) -> str:
        # Longest first so a secret containing another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        value = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK, value)
        value = _KEY_VALUE.sub(lambda m: m.group("pre") + MASK, value)
        value = _ENV_ASSIGNMENT.sub(lambda m: m.group("pre") + MASK, value)
        return _BEARER.sub(lambda m: m.group("pre") + MASK, value)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
