"""The notification outbox: messages are written in the same transaction as the incident change they
tell of, then delivered apart from any run or alert — one thread per channel, so a dead channel delays no
other; retried with backoff; each attempt audited; one message per event per channel."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.audit import AuditLog
from agent.exceptions import AuditError
from agent.notify.channels import TIMEOUT, DeliveryError, Message, send
from agent.redaction import Redactor
from agent.state import Db, StateStore

__all__ = ["Claimed", "Courier", "Outbox", "Queued"]

MAX_ATTEMPTS = 12  # with the backoff below, about an hour and a half of trying
PASS = 50  # messages one pass delivers per channel before looking at the stop flag again


def lease(timeout: float) -> float:
    """How long a claimed message is another process's to send: an attempt's connect, exchange and close
    may each take the channel's timeout; the margin covers writing the outcome on a busy machine."""
    return 3 * timeout + 10


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


@dataclass(frozen=True)
class Claimed:
    """A message taken for sending, and the token that says this process holds it."""

    message: Queued
    token: str


_COLUMNS = "id, incident_id, event_key, channel, event, subject, body, status, attempts, last_error, created, sent"


class Outbox:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def enqueue(
        db: Db,
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
            "INSERT INTO outbox (incident_id, event_key, channel, event, subject, body, created, status,"
            " next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
            (incident_id, event_key, channel, event, subject, body, now, now),
        )

    def claim(self, channel: str, lease: float) -> Claimed | None:
        """Take the channel's next due message for sending, leased for `lease` seconds under a fresh claim
        token: one at a time, so a slow channel's lease never runs out on messages still waiting their
        turn; two processes never send one message at once."""
        now = time.time()
        token = uuid.uuid4().hex
        # Its row locked (SKIP LOCKED on PostgreSQL: another agent's courier takes the next one instead of
        # waiting), so no write lock of the whole store is needed.
        with self.state.write(serialize=False) as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE channel = ? AND status = 'pending' AND next_attempt <= ?"
                f" ORDER BY id LIMIT 1{self.state.skip_locked}",
                (channel, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, claim = ? WHERE id = ?",
                (now + lease, token, row[0]),
            )
        return Claimed(Queued(*row)._replace_attempts(row[8] + 1), token)

    def sent(self, claimed: Claimed) -> bool:
        """Record a delivery; False if the lease had run out and another process holds the message now
        (it will be sent again: delivery is at least once, with the same key for the receiver to drop)."""
        with self.state.write() as db:
            cursor = db.execute(
                "UPDATE outbox SET status = 'sent', sent = ?, last_error = NULL, claim = NULL"
                " WHERE id = ? AND claim = ?",
                (time.time(), claimed.message.id, claimed.token),
            )
        return cursor.rowcount == 1

    def failed(self, claimed: Claimed, error: str) -> bool:
        """Record a failed attempt; True if it will be tried again. Another process's claim is left alone."""
        message = claimed.message
        again = message.attempts < MAX_ATTEMPTS
        with self.state.write() as db:
            db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, next_attempt = ?, claim = NULL"
                " WHERE id = ? AND claim = ?",
                (
                    "pending" if again else "failed",
                    error,
                    time.time() + backoff(message.attempts),
                    message.id,
                    claimed.token,
                ),
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
        """One pass over a channel's due messages, one claimed at a time: (sent, failed)."""
        sent = failed = 0
        config = self.channels.get(channel)
        for _ in range(PASS):
            if self._stop.is_set():
                break
            claimed = self.outbox.claim(channel, lease(config.timeout if config is not None else TIMEOUT))
            if claimed is None:
                break
            message = claimed.message
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
                self.outbox.sent(claimed)
                sent += 1
            else:
                again = self.outbox.failed(claimed, self.redactor.text(error))
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
