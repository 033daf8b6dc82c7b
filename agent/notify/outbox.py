"""The notification outbox: messages are written in the same transaction as the incident change they
tell of, then delivered apart from any run or alert — one thread per channel, so a dead channel delays no
other; retried with backoff; each attempt audited; one message per event per channel."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.audit import AuditLog
from agent.exceptions import AuditError
from agent.notify.channels import TIMEOUT, DeliveryError, Message, send
from agent.redaction import Redactor
from agent.state import StateStore

__all__ = ["Courier", "Outbox", "Queued"]

MAX_ATTEMPTS = 12  # with the backoff below, about an hour and a half of trying
_LEASE = 3 * TIMEOUT  # a claimed message is another process's to send for this long


def backoff(attempts: int) -> float:
    return float(min(600, 5 * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Queued:
    id: int
    incident_id: int | None
    event_key: str
    channel: str
    event: str
    subject: str
    body: str
    status: str
    attempts: int
    last_error: str | None
    created: float
    sent: float | None

    def _replace_attempts(self, attempts: int) -> Queued:
        return dataclasses.replace(self, attempts=attempts)


_COLUMNS = "id, incident_id, event_key, channel, event, subject, body, status, attempts, last_error, created, sent"


class Outbox:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def enqueue(
        db: sqlite3.Connection,
        *,
        incident_id: int | None,
        event_key: str,
        channel: str,
        event: str,
        subject: str,
        body: str,
    ) -> None:
        """Inside the caller's transaction; the same event for the same channel is kept once."""
        now = time.time()
        db.execute(
            "INSERT OR IGNORE INTO outbox (incident_id, event_key, channel, event, subject, body, created, status,"
            " next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (incident_id, event_key, channel, event, subject, body, now, now),
        )

    def claim(self, channel: str, limit: int = 10) -> list[Queued]:
        """Take due messages of a channel for sending: leased, so two processes never send one at once."""
        now = time.time()
        claimed: list[Queued] = []
        with self.state.write() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE channel = ? AND status = 'pending' AND next_attempt <= ?"
                " ORDER BY id LIMIT ?",
                (channel, now, limit),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt = ? WHERE id = ?", (now + _LEASE, row[0])
                )
                claimed.append(Queued(*row)._replace_attempts(row[8] + 1))
        return claimed

    def sent(self, message_id: int) -> None:
        with self.state.write() as db:
            db.execute(
                "UPDATE outbox SET status = 'sent', sent = ?, last_error = NULL WHERE id = ?", (time.time(), message_id)
            )

    def failed(self, message: Queued, error: str) -> bool:
        """Record a failed attempt; True if it will be tried again."""
        again = message.attempts < MAX_ATTEMPTS
        with self.state.write() as db:
            db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, next_attempt = ? WHERE id = ?",
                ("pending" if again else "failed", error, time.time() + backoff(message.attempts), message.id),
            )
        return again

    def of_incident(self, incident_id: int) -> list[Queued]:
        rows = self.state.query(f"SELECT {_COLUMNS} FROM outbox WHERE incident_id = ? ORDER BY id", (incident_id,))
        return [Queued(*r) for r in rows]

    def waiting(self) -> int:
        return int(self.state.query("SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0])


Sender = Callable[[Any, Message], None]


class Courier:
    """Delivers the outbox's messages to their channels."""

    def __init__(
        self,
        outbox: Outbox,
        channels: dict[str, Any],
        audit: AuditLog,
        redactor: Redactor,
        *,
        sender: Sender = send,
    ) -> None:
        self.outbox, self.channels, self.audit, self.redactor, self.sender = outbox, channels, audit, redactor, sender
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def deliver(self, channel: str) -> tuple[int, int]:
        """One pass over a channel's due messages: (sent, failed)."""
        sent = failed = 0
        config = self.channels.get(channel)
        for message in self.outbox.claim(channel):
            error: str | None = None
            again = False
            if config is None:
                error = f"channel {channel} is no longer configured"
            else:
                try:
                    self.sender(
                        config,
                        Message(message.event, message.subject, message.body, message.incident_id, message.event_key),
                    )
                except DeliveryError as exc:
                    error = str(exc)
                except Exception as exc:  # a bug in a sender is a failed attempt, never a dead courier
                    error = f"{type(exc).__name__}: {exc}"
            if error is None:
                self.outbox.sent(message.id)
                sent += 1
            else:
                again = self.outbox.failed(message, self.redactor.text(error))
                failed += 1
            self._audit(message, error, again=again)
        return sent, failed

    def _audit(self, message: Queued, error: str | None, *, again: bool) -> None:
        outcome = "sent" if error is None else ("retrying" if again else "gave_up")
        # The delivery happened (or not) either way: the outbox row says which, even without this record.
        with contextlib.suppress(AuditError):
            self.audit.record(
                "notification_attempt",
                incident=message.incident_id,
                channel=message.channel,
                kind=message.event,
                event_key=message.event_key,
                attempt=message.attempts,
                outcome=outcome,
                error=self.redactor.text(error) if error else None,
            )

    def start(self) -> None:
        """One thread per channel: a channel that hangs or refuses holds up no other."""
        for channel in self.channels:
            thread = threading.Thread(target=self._loop, args=(channel,), name=f"notify-{channel}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, channel: str) -> None:
        while not self._stop.wait(1.0):
            try:
                self.deliver(channel)
            except Exception:  # noqa: S112 - the state store busy: try again next second
                continue

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT + 2)

    def flush(self, within: float) -> dict[str, tuple[int, int]]:
        """Deliver what is due now, every channel at once, for at most `within` seconds (the CLI, after a
        run: what is not delivered stays in the outbox for the daemon or the next run)."""
        results: dict[str, tuple[int, int]] = {}

        def one(channel: str) -> None:
            results[channel] = self.deliver(channel)

        threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in self.channels]
        for thread in threads:
            thread.start()
        end = time.monotonic() + within
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        return results
