"""The outbox's claims: one message at a time, leased under a token, so a process whose lease ran out never
writes over the outcome of the process that holds the message now."""

from __future__ import annotations

from pathlib import Path

from agent.notify.outbox import Outbox
from agent.state import StateStore
from tests.state_backend import open_state


def _queue(state: StateStore, *keys: str) -> None:
    with state.write() as db:
        for key in keys:
            Outbox.enqueue(db, incident_id=1, event_key=key, channel="c", event="opened", subject="s", body="b")


def test_claims_are_one_at_a_time_and_never_shared(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    _queue(state, "k1", "k2")
    first, second = Outbox(state).claim("c", 60), Outbox(state).claim("c", 60)
    assert first is not None and second is not None
    assert (first.message.event_key, second.message.event_key) == ("k1", "k2")
    assert Outbox(state).claim("c", 60) is None  # both leased: nothing due


def test_a_stale_claim_never_writes_over_the_new_holder(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    _queue(state, "k1")
    outbox = Outbox(state)
    stale = outbox.claim("c", 0.0)  # its lease runs out at once: the message is due again
    assert stale is not None
    holder = outbox.claim("c", 60)
    assert holder is not None and holder.message.id == stale.message.id and holder.token != stale.token
    assert outbox.sent(stale) is False
    outbox.failed(stale, "late failure")
    (row,) = outbox.of_incident(1)
    assert (row.status, row.last_error, row.attempts) == ("pending", None, 2)  # untouched by the stale one
    assert outbox.sent(holder) is True
    (row,) = outbox.of_incident(1)
    assert row.status == "sent"
