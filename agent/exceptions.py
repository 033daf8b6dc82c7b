"""The project's one exception base: every error carries its exit code and a one-line message."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ApplyError",
    "AuditError",
    "ConfigError",
    "Conflict",
    "NotFound",
    "PlanChanged",
    "PlanError",
    "RunbookError",
    "RunbookValidationError",
    "TargetUnreachable",
    "UnknownName",
    "UnknownRunbook",
]


class RunbookError(Exception):
    """Base of every error the CLI reports as one line (tracebacks only with --verbose)."""

    exit_code = 2
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StateUnavailable(RunbookError):
    """The shared state database cannot be reached or answer in time: nothing is decided without it."""

    exit_code = 3
    code = "state_unavailable"


class ConfigError(RunbookError):
    code = "config_error"


class UnknownRunbook(RunbookError):
    code = "unknown_runbook"


class UnknownName(RunbookError):
    """A check or remediation name that no plugin has."""

    code = "unknown_name"


class RunbookValidationError(RunbookError):
    """One or more problems found while loading runbooks; each is already `file:line: field: reason`."""

    code = "invalid_runbook"

    def __init__(self, problems: Sequence[object]) -> None:
        # Each a line of text, or an object whose str() is one (agent.sources.Problem, for --json).
        super().__init__("\n".join(map(str, problems)))
        self.problems = [str(p) for p in problems]
        self.found = list(problems)


class AuditError(RunbookError):
    """The audit log cannot be written or does not verify."""

    code = "audit_error"
    exit_code = 1


class TargetUnreachable(Exception):
    """Raised by a check when its target refused the connection or timed out: the result is CRITICAL."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PlanError(Exception):
    """A remediation cannot make its plan (nothing to roll back to, a bound exceeded): recorded, not applied."""


class ApplyError(Exception):
    """An effect did not take (a container never became healthy, a session was already gone...)."""


class NotFound(RunbookError):
    """A run, or a pending approval, that does not exist."""

    code = "not_found"
    exit_code = 1


class Conflict(RunbookError):
    """A request that cannot be done in the state things are in (approving a dry run's plan, say)."""

    code = "conflict"
    exit_code = 1


class PlanChanged(Conflict):
    """An approval names a plan that is no longer the plan: a person must look at the new one."""

    code = "plan_changed"
