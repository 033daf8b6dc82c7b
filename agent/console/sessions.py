"""Console sign-in sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept in this daemon's
memory with its person, its CSRF token and its expiry.

In memory on purpose: a session is a person at one agent's console; a restarted agent signs everyone
out, and nothing of a session is written where another process could read it. Bounded: the oldest
session goes when too many are open."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "Sessions"]

COOKIE = "runbook_session"
LOGIN_COOKIE = "runbook_login"  # the sign-in form's own CSRF token (double submit), before any session


@dataclass(frozen=True)
class Session:
    person: str
    csrf: str
    expires: float

    def form_ok(self, token: str) -> bool:
        """Whether a form carries this session's CSRF token."""
        return hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, life: float = 8 * 3600, limit: int = 1000) -> None:
        self.life, self.limit = life, limit
        self._open: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(session_id: str) -> str:
        # Kept by digest: the ids themselves are nowhere but in the people's cookies.
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open(self, person: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(person, secrets.token_urlsafe(32), time.monotonic() + self.life)
        with self._lock:
            self._open[self._key(session_id)] = session
            while len(self._open) > self.limit:
                self._open.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        key = self._key(session_id)
        with self._lock:
            session = self._open.get(key)
            if session is not None and session.expires < time.monotonic():
                del self._open[key]
                return None
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._open.pop(self._key(session_id), None)
