"""Threshold helpers for checks: a measured value against warn/crit levels."""

from __future__ import annotations

from agent.status import Status

__all__ = ["above"]


def above(value: float, warn: float | None, crit: float | None) -> Status:
    """CRITICAL at or above `crit`, WARNING at or above `warn`, else OK."""
    if crit is not None and value >= crit:
        return Status.CRITICAL
    if warn is not None and value >= warn:
        return Status.WARNING
    return Status.OK
