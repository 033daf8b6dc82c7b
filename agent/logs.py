"""The daemon's operational log: one structured line per request, per alert disposition, per run start and
end, per remediation decision and per escalation, through structlog to stderr (journald reads it there).
JSON lines when stderr is not a terminal, console rendering when it is. Redacted like everything else.

The audit log stays the record; these lines are for operators, so they are short: an audit record is
logged with its scalar fields only (a plan or a check's evidence stays in the audit log), each cut to
MAX_VALUE characters. Until `configure()` is called nothing is logged at all, so the CLI's commands
(which share the modules that log) print only what they mean to print, and never import structlog.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO

from agent.redaction import Redactor

__all__ = [
    "DEBUG",
    "ERROR",
    "FORMATS",
    "INFO",
    "LEVELS",
    "WARNING",
    "RequestLog",
    "audit_records",
    "configure",
    "enabled",
    "log",
    "reset",
]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
FORMATS = ("json", "console")
MAX_VALUE = 300  # characters of one logged value at most: a line stays a line
MAX_ALERT_LINES = 20  # dispositions logged one by one per payload; the rest are counted in one line

# What each audit event is logged at (others are not logged: the audit log has them).
_AUDITED: dict[str, int] = {
    "run_started": INFO,
    "run_finished": INFO,
    "remediation_decision": INFO,
    "remediation_planned": INFO,
    "approval": INFO,
    "apply_started": INFO,
    "apply_finished": INFO,
    "verify": INFO,
    "silence_requested": DEBUG,
    "silence_created": INFO,
    "silence_ends": INFO,
    "silence_expired": INFO,
    "silence_skipped": WARNING,
    "silence_failed": WARNING,
    "silence_expire_failed": WARNING,
    "escalation": WARNING,
    "escalation_failed": ERROR,
    "run_interrupted": WARNING,
    "run_failed": ERROR,
    "schedule_failed": ERROR,
    "incident_update_failed": ERROR,
    "paused": WARNING,
    "resumed": INFO,
    "breaker_reset": INFO,
    "check_result": DEBUG,
}

_logger: Any = None  # structlog's bound logger once configured; None: logging is off
_threshold = 100


def configure(level: str, fmt: str | None, redactor: Redactor, stream: TextIO | None = None) -> None:
    """Log at `level` and above, as `fmt` (None: json unless the stream is a terminal), redacting every
    line with `redactor` (which learns secrets as the daemon starts: it is read at each line)."""
    structlog = _import_structlog()

    global _logger, _threshold
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)

    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        # Whole values first, then cut: a secret cut in two would escape the masking that finds it whole.
        return {k: _short(v) for k, v in redactor.data(dict(event)).items()}

    _threshold = LEVELS[level]
    _logger = structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_threshold),
    )


def _import_structlog() -> Any:
    """structlog, without the rich and pygments it imports for pretty tracebacks: these logs render
    tracebacks plainly, and the two cost a daemon ~4 MB and ~30 ms for nothing. Only while structlog is
    first imported: anything that wants rich later (the CLI's output) imports it as usual."""
    blocked = [name for name in ("rich", "better_exceptions") if name not in sys.modules]
    if "structlog" not in sys.modules:
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return structlog


def reset() -> None:
    """Logging off again (tests)."""
    global _logger, _threshold
    _logger, _threshold = None, 100


def enabled(level: int) -> bool:
    return _logger is not None and level >= _threshold


def log(level: int, event: str, **fields: Any) -> None:
    """One line, if logging is on and `level` is at or above its threshold. Never raises: a log that
    cannot be written (a closed stderr) must not fail the intake or the run it describes."""
    if not enabled(level):
        return
    with contextlib.suppress(Exception):
        _logger.log(level, event, **fields)


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE:
        return value[:MAX_VALUE] + "…"
    return value


def audit_records(records: list[dict[str, Any]]) -> None:
    """The audit log's observer: operators' lines for the records they act on (already redacted)."""
    for record in records:
        event = record.get("event")
        level = _AUDITED.get(event) if isinstance(event, str) else None
        if level is None or not enabled(level):
            continue
        fields = {
            k: v
            for k, v in record.items()
            if k not in ("event", "ts", "seq", "prev", "hash") and (v is None or isinstance(v, str | int | float))
        }
        log(level, str(event), **fields)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestLog:
    """One line per HTTP request: method, route (the matched path template, never the raw path, the
    query or any header: tokens travel there), status, duration and the peer. A plain ASGI wrapper, so
    that it also sees the answers the app's own middleware gives (401, 413, 429)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not enabled(ERROR):  # (INFO or ERROR: decided by the answer)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            client = scope.get("client")
            log(
                INFO if 0 < status[0] < 500 else ERROR,  # no answer at all (0) is an error too
                "request",
                method=str(scope.get("method", ""))[:16],
                route=getattr(route, "path", None) or "(no route)",
                status=status[0] or None,
                duration_ms=round((time.perf_counter() - start) * 1000, 1),
                peer=f"{client[0]}" if client else "local",
            )
