"""Check statuses in the Nagios plugin convention, ordered by severity rather than by number."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["Status", "worst"]


class Status(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        return _EXIT[self]

    @property
    def severity(self) -> int:
        # UNKNOWN (3) ranks below CRITICAL (2): a check we could not run is less sure than one that failed.
        return _SEVERITY[self]


_EXIT = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2, Status.UNKNOWN: 3}
_SEVERITY = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The overall status: the most severe one, OK when there is none."""
    return max(statuses, key=lambda s: s.severity, default=Status.OK)
