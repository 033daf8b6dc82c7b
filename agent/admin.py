"""A person's switches over remediation: pause, resume, close a circuit breaker. Each is audited first (if
the record cannot be written, nothing changes), then made in the state store. The CLI and the daemon's API
both come here."""

from __future__ import annotations

from agent.audit import AuditLog
from agent.exceptions import NotFound
from agent.state import StateStore

__all__ = ["pause", "reset_breaker", "resume"]


def pause(state: StateStore, audit: AuditLog, actor: str, reason: str) -> None:
    audit.record("paused", reason=reason)
    state.set_paused(True, actor, reason)


def resume(state: StateStore, audit: AuditLog, actor: str) -> None:
    audit.record("resumed")
    state.set_paused(False, actor)


def reset_breaker(state: StateStore, audit: AuditLog, target: str) -> None:
    if state.breaker(target) is None:
        known = ", ".join(b.target for b in state.breakers()) or "none open"
        raise NotFound(f"no open circuit breaker for {target!r} (open: {known})")
    audit.record("breaker_reset", target=target)
    state.reset_breaker(target)
