"""Removes secrets (URL/DSN passwords, tokens, params marked secret) from anything shown or recorded."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "Redactor", "is_secret_name", "secrets_in_url"]

MASK = "***"

# Every pattern below runs over outside text (alert labels, log lines, HTTP bodies), so each must be
# linear in its input: it is anchored on the left (a lookbehind or \b, so an attempt can only begin where
# a token begins, and a failed attempt elsewhere costs O(1)) and its quantifiers are possessive (nothing
# is ever re-scanned by backtracking). tests/unit/test_redaction.py times them on 1 MiB of hostile text.

# scheme://user:password@ — the password, whatever the scheme (postgresql, redis, https...); and a bare
# user that looks like a key (a Sentry DSN's public key, a token in https://TOKEN@github.com/...).
_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<pre>[A-Za-z][A-Za-z0-9+.-]*+://)(?P<user>[^/\s:@]*+)(?::(?P<password>[^@\s/]*+))?+@"
)
_KEY_LIKE_USER = re.compile(r"[A-Za-z0-9_-]{20,}+")
# libpq key/value DSNs and query strings: password=..., also token=, secret=, api_key=; and the same keys
# quoted, as JSON or a Python dict prints them in a log line or an exception ({"password": "..."}).
_KEY_VALUE = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key"
    r"|(?:access|refresh|auth|id|bearer)[_-]?token|client[_-]?secret|private[_-]?key)\\?+[\"']?+\s*+(?:=>|[=:])\s*+)"
    r"(?P<secret>\\\"(?:[^\\\"]|\\[^\"])*+\\\"|'(?:[^'\\]|\\.)*+'|\"(?:[^\"\\]|\\.)*+\"|[^\s&,;'\"}\\]++)",
    re.IGNORECASE,
)
# Any quoted key, as JSON or a Python dict prints it ({"db_password": "..."}, {'PGPASSWORD': '...'}), also
# JSON inside a JSON string ({\"db_password\":\"...\"}) and Ruby's `=>`: its value masked when the key
# names a secret (the same rule as a NAME=value assignment). Only the key is matched (a key inside another
# key's value is still found); the value is matched after it, only for a secret key. Linear: a key starts
# at a quote and is at most 64 characters; a quoted value runs to its closing quote or the end of the
# text, and whatever a value match scans is consumed (nothing is scanned twice).
_QUOTED_KEY = re.compile(r"(?P<q>\\?+[\"'])(?P<key>[A-Za-z0-9_.-]{1,64}+)(?P=q)\s*+(?:=>|[:=])\s*+")
_QUOTED_VALUE = re.compile(
    r"\\\"(?:[^\\\"]|\\[^\"])*+(?:\\\"|\Z)"
    r"|\"(?:[^\"\\]|\\.)*+(?:\"|\Z)"
    r"|'(?:[^'\\]|\\.)*+(?:'|\Z)"
    r"|[^\s,;}\]\\]++"
)
# NAME=value, as in a container's environment or a log line: masked when NAME names a secret.
_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])(?P<name>[A-Za-z_][A-Za-z0-9_]*+)=(?P<secret>[^\s,;'\"&]++)")
_AUTH_HEADER = re.compile(r"(?P<pre>\b(?:Bearer|Basic|Token)\s++)(?P<secret>[A-Za-z0-9._~+/=-]++)", re.IGNORECASE)
# A name is secret when one of its `_`-separated words says so: DB_PASS, STRIPE_SK, SENTRY_DSN, API_KEY;
# not PASSENGER_COUNT or CACHE_KEY_PREFIX.
_SECRET_WORDS = re.compile(
    r"(?:^|_)(?:PASSWORD|PASSWD|PASS|PWD|PASSPHRASE|TOKEN|SECRET|SK|DSN|CREDENTIALS?|AUTH|COOKIE|APIKEY"
    r"|(?:API|ACCESS|PRIVATE|SIGNING|ENCRYPTION|MASTER|CLIENT)_?KEY"
    # libpq's own (no `_` before PASSWORD), and a webhook's URL (its path is the credential: Slack's)
    r"|PGPASSWORD|WEBHOOK_URL)(?:_|$)"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """Whether a variable, key or header name names a secret (`DB_PASSWORD`, `apiKey`, `x-auth-token`)."""
    return _is_secret_name(name[:256])


@functools.lru_cache(maxsize=4096)  # the same few keys are asked about for every result and record
def _is_secret_name(name: str) -> bool:
    return _SECRET_WORDS.search(_CAMEL.sub("_", name).replace("-", "_").upper()) is not None


def secrets_in_url(url: str) -> list[str]:
    """The password of a URL, raw and percent-decoded (both forms can leak into messages)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password)})


def _userinfo(match: re.Match[str]) -> str:
    if match.group("password") is not None:
        return f"{match.group('pre')}{match.group('user')}:{MASK}@"
    if _KEY_LIKE_USER.fullmatch(match.group("user")):
        return f"{match.group('pre')}{MASK}@"
    return match.group(0)


def _mask_quoted_keys(text: str) -> str:
    out: list[str] = []
    pos = 0
    for key in _QUOTED_KEY.finditer(text):
        if key.start() < pos or not is_secret_name(key.group("key")):
            continue  # inside a value masked already, or not a secret's key
        value = _QUOTED_VALUE.match(text, key.end())
        if value is not None:
            out += [text[pos : key.end()], MASK]
            pos = value.end()
    return "".join(out) + text[pos:] if out else text


def _assignment(match: re.Match[str]) -> str:
    return f"{match.group('name')}={MASK}" if is_secret_name(match.group("name")) else match.group(0)


class Redactor:
    """Masks known secret values and secret-shaped substrings in strings and nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._adding = threading.Lock()  # two runs adding their secret params at once must both count
        self.add(*secrets)

    def add(self, *values: str) -> None:
        with self._adding:
            found: set[str] = set(self._secrets)
            before = len(found)
            for value in values:
                # Very short values would mask ordinary words; they are still caught by the patterns.
                if isinstance(value, str) and len(value) >= 4:
                    found.add(value)
                    found.update(p for p in secrets_in_url(value) if len(p) >= 4)
            if len(found) == before:
                return  # nothing new (a daemon's runs add the same params again and again)
            # Replaced, never mutated: the daemon's threads may be reading it. Longest first, so a secret
            # containing another is masked whole.
            self._secrets = tuple(sorted(found, key=len, reverse=True))

    def add_from_env(self, env: Mapping[str, str]) -> None:
        """Take passwords from URL-valued variables and the values of secret-named variables."""
        for name, value in env.items():
            if name in ("PWD", "OLDPWD"):
                continue  # the working directory: "PWD" reads as a password's name, and masked it everywhere
            if is_secret_name(name):
                self.add(value)
            elif "://" in value:
                for found in secrets_in_url(value):
                    self.add(found)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        # Each pattern needs a character most strings lack: looking for it first is far cheaper than
        # running the pattern over every string of every record.
        if "://" in value:
            value = _URL_USERINFO.sub(_userinfo, value)
        if "=" in value or ":" in value:
            if "'" in value or '"' in value:
                value = _mask_quoted_keys(value)
            value = _KEY_VALUE.sub(lambda m: m.group("pre") + MASK, value)
        if "=" in value:
            value = _ASSIGNMENT.sub(_assignment, value)
        return _AUTH_HEADER.sub(lambda m: m.group("pre") + MASK, value)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like data with every string redacted, and the string values of secret-named keys
        (`{"password": ...}`, a container's `{"API_TOKEN": ...}`) masked whole."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                k: MASK if isinstance(v, str) and isinstance(k, str) and is_secret_name(k) else self.data(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.data(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        # Anything else would reach JSON as its str() (a date, a path, a plugin's own object): redacted
        # as text, so nothing shown or recorded escapes redaction by its type.
        return self.text(str(value))
