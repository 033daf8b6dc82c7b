"""Alertmanager silences while a remediation works: the alert that started a run stays quiet (no page, no
repeat to other receivers) while its fix is applied and verified. A silence is created with an end of its
own, so an agent that dies mid-change never leaves an alert silenced for longer than that.

Alertmanager's API v2: GET /api/v2/alerts (is the alert there, and would the silence mute anything
else?), POST /api/v2/silences (create, or with an `id` change the end), DELETE /api/v2/silence/{id}
(expire). On the standard library's http.client, like the notification channels: a handful of requests,
each bounded in time and size, each failure kept with its cause for the audit log."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

__all__ = ["MAX_MATCHERS", "SilenceError", "Silencer", "check_url", "matchers", "rfc3339"]

MAX_MATCHERS = 64  # labels of one alert made into matchers at most: a label set is never that large
MAX_ANSWER = 4096  # bytes of an answer to a change read at most
MAX_LISTING = 256 * 1024  # bytes of a list of alerts or silences: more than that, and nothing is silenced
_SILENCE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # Alertmanager's ids are UUIDs
_BAD_URL = "not a usable http:// or https:// URL (percent-encode any / ? # @ in its password)"


class SilenceError(Exception):
    """A silence was not created, changed or expired; the message says why (refused, HTTP 400, timeout)."""


def check_url(url: str) -> str:
    """An http(s) URL with a host, and nothing else a password with a stray / ? # or @ could have turned
    it into. The message never quotes the URL: it may hold a password."""
    try:
        parts = urlsplit(url)
        port = parts.port
        if parts.hostname:
            parts.hostname.encode("idna")
    except (ValueError, UnicodeError):
        raise ValueError(_BAD_URL) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "@" in parts.path
        or not url.isascii()
        or port == 0
    ):
        raise ValueError(_BAD_URL)
    return url


def matchers(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """One exact, equality matcher per label. Alertmanager silences every alert that has *at least* these
    labels: `Silencer.others` is what tells whether that is more than the alert itself."""
    if not labels:
        raise SilenceError("the alert has no labels to silence it by")
    if len(labels) > MAX_MATCHERS:
        raise SilenceError(f"the alert has {len(labels)} labels; a silence is made from at most {MAX_MATCHERS}")
    return [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())]


def _filter(labels: Mapping[str, str]) -> list[str]:
    """The same matchers in the API's filter syntax (`name="value"`, quotes and backslashes escaped)."""
    matchers(labels)  # the same bounds
    escaped = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    return [f'{k}="{v}"' for k, v in sorted(escaped.items())]


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:200])


class Silencer:
    """Silences in one Alertmanager (`alertmanager_url`, basic-auth credentials allowed in it). Each
    request is cut at `timeout` seconds in all, however slowly the other side answers."""

    def __init__(self, url: str, *, connect_timeout: float, timeout: float, created_by: str = "runbook") -> None:
        try:
            check_url(url)
        except ValueError as exc:
            raise SilenceError(str(exc)) from None
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        # Named without credentials, for records and messages.
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.where = f"{parts.scheme}://{host}:{self._port}{self._base}"
        self._connect_timeout = min(connect_timeout, timeout)
        self._timeout = timeout
        self.created_by = created_by
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()

    def others(self, labels: Mapping[str, str]) -> tuple[int, int]:
        """How many alerts Alertmanager has now with exactly these labels, and how many others a silence
        of them would also mute (alerts with these labels and more)."""
        query = urlencode([("filter", f) for f in _filter(labels)])
        alerts = self._json("GET", f"/api/v2/alerts?{query}", None, MAX_LISTING)
        if not isinstance(alerts, list):
            raise SilenceError(f"{self.where} answered the alerts query with something other than a list")
        same = sum(1 for a in alerts if isinstance(a, dict) and a.get("labels") == dict(labels))
        return same, len(alerts) - same

    def create(self, labels: Mapping[str, str], *, starts: float, ends: float, comment: str) -> str:
        """A silence of these labels from `starts` to `ends` (Unix times); its id."""
        return self._set(None, labels, starts=rfc3339(starts), ends=ends, comment=comment)

    def end_at(self, silence_id: str, labels: Mapping[str, str], *, ends: float, comment: str) -> str | None:
        """Move the end of a silence still in force; None if it is not (a person expired it, or it ran
        out): a silence somebody ended is never made again. Sent with the start Alertmanager stored, so
        it changes in place; if Alertmanager cannot, it expires it and makes another: the id returned is
        the one in force."""
        current = self._json("GET", f"/api/v2/silence/{quote(silence_id, safe='')}", None, MAX_ANSWER)
        state = (current.get("status") or {}).get("state") if isinstance(current, dict) else None
        if state not in ("active", "pending"):
            return None
        starts = current.get("startsAt")
        if not isinstance(starts, str) or len(starts) > 64:
            raise SilenceError(f"{self.where} answered with an unusable silence")
        return self._set(silence_id, labels, starts=starts, ends=ends, comment=comment)

    def expire(self, silence_id: str, *, attempts: int = 3) -> None:
        """Expire a silence; one already expired or gone counts as expired. Tried a few times: an alert
        left silenced after a failed fix is an alert nobody hears."""
        path = f"/api/v2/silence/{quote(silence_id, safe='')}"
        for attempt in range(attempts):
            try:
                status, answer = self._request("DELETE", path, None, MAX_ANSWER)
            except SilenceError:
                if attempt == attempts - 1:
                    raise
            else:
                # Gone: 404, or Alertmanager 0.25's HTTP 500 "silence not found" / "already expired".
                if 200 <= status < 300 or status == 404 or "already expired" in answer or "not found" in answer:
                    return
                if attempt == attempts - 1 or status < 500:
                    raise SilenceError(f"{self.where} answered HTTP {status}: {_printable(answer)}")
            time.sleep(0.5 * (attempt + 1))

    def ours(self, labels: Mapping[str, str], marker: str) -> list[str]:
        """The silences of these labels made by this agent whose comment names `marker` (a run id) and
        that are not expired: after a create whose answer was lost, what to expire."""
        query = urlencode([("filter", f) for f in _filter(labels)])
        silences = self._json("GET", f"/api/v2/silences?{query}", None, MAX_LISTING)
        found = []
        for s in silences if isinstance(silences, list) else []:
            if (
                isinstance(s, dict)
                and s.get("createdBy") == self.created_by
                and marker in str(s.get("comment", ""))
                and (s.get("status") or {}).get("state") in ("active", "pending")
                and isinstance(s.get("id"), str)
            ):
                found.append(s["id"])
        return found

    def _set(self, silence_id: str | None, labels: Mapping[str, str], *, starts: str, ends: float, comment: str) -> str:
        body: dict[str, Any] = {
            "matchers": matchers(labels),
            "startsAt": starts,
            "endsAt": rfc3339(ends),
            "createdBy": self.created_by,
            "comment": comment[:1000],
        }
        if silence_id is not None:
            body["id"] = silence_id
        answer = self._json("POST", "/api/v2/silences", json.dumps(body).encode(), MAX_ANSWER)
        new_id = answer.get("silenceID") if isinstance(answer, dict) else None
        if not isinstance(new_id, str) or not _SILENCE_ID.fullmatch(new_id):
            raise SilenceError(f"{self.where} answered without a usable silence id")
        return new_id

    def _json(self, method: str, path: str, body: bytes | None, limit: int) -> Any:
        status, answer = self._request(method, path, body, limit)
        if not 200 <= status < 300:
            raise SilenceError(f"{self.where} answered HTTP {status}: {_printable(answer)}")
        try:
            return json.loads(answer)
        except (ValueError, RecursionError):
            raise SilenceError(
                f"{self.where} answered with something other than JSON (or more of it than read)"
            ) from None

    def _request(self, method: str, path: str, body: bytes | None, limit: int) -> tuple[int, str]:
        import http.client

        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn: Any = kind(self._host, self._port, timeout=self._connect_timeout)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth

        cut_off = threading.Event()

        def cut() -> None:  # the whole request's deadline: a slow trickle of bytes cannot hold it open
            cut_off.set()
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)

        def left() -> float:
            remaining = self._timeout - (time.monotonic() - started)
            if remaining <= 0 or cut_off.is_set():
                raise TimeoutError
            return remaining

        watchdog = threading.Timer(self._timeout, cut)
        watchdog.daemon = True
        started = time.monotonic()
        try:
            watchdog.start()
            conn.connect()  # (a name that is slow to resolve can take longer: checked right after)
            conn.sock.settimeout(left())
            conn.request(method, self._base + path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(limit + 1)
            left()  # a body cut at the deadline is a timeout, not a bad answer
        except (OSError, http.client.HTTPException, ValueError, UnicodeError) as exc:
            if cut_off.is_set() or time.monotonic() - started >= self._timeout:
                raise SilenceError(f"{self.where}: no answer within {self._timeout:g}s") from None
            raise SilenceError(f"{self.where}: {str(exc) or type(exc).__name__}") from None
        finally:
            watchdog.cancel()
            conn.close()
        if len(answer) > limit:
            raise SilenceError(f"{self.where} answered with more than {limit} bytes")
        return response.status, answer.decode("utf-8", "replace").strip()
