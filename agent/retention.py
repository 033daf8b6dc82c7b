"""Retention: how long the state store keeps alerts, runs and actions, and the prune that enforces it."""

from __future__ import annotations

import time

from agent.audit import AuditLog
from agent.config import Settings
from agent.state import StateStore

__all__ = ["prune"]


def prune(state: StateStore, settings: Settings, audit: AuditLog) -> dict[str, int]:
    """Delete state past its retention and say so in the audit log. Actions are kept at least as long as
    the longest limit window could look back (the default window, or a week), so a prune never resets a
    rate limit; the audit log itself is never pruned."""
    now = time.time()
    keep_actions = max(settings.run_retention, settings.limit_window, 7 * 86400.0)
    cutoffs = {
        "alerts_before": now - settings.alert_retention,
        "runs_before": now - settings.run_retention,
        "actions_before": now - keep_actions,
    }
    # Recorded before anything is deleted: if the record cannot be written, nothing is.
    audit.record("state_pruned", **cutoffs)
    return state.prune(**cutoffs)
