"""HTTP checks: status code, body substring and latency of an endpoint (the guide's health checks)."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from agent.plugin_api import CheckContext, DurationMs, Outcome, Params, PluginSet, Status, TargetUnreachable, above

plugins = PluginSet("http")

# Only this much of a body is read: more than any health page; a server sending more is not waited on.
MAX_BODY = 1_048_576


class GetParams(Params):
    url: str = Field(description="http(s) URL to GET (credentials in it are masked in all output).")
    expect_status: list[int] = Field([200], description="Status codes that count as healthy.")
    contains: str | None = Field(None, description="Text the body must contain (in its first MiB).")
    warn_ms: DurationMs | None = Field(1000.0, gt=0, description="Latency for WARNING (ms, or 1s).")
    crit_ms: DurationMs | None = Field(5000.0, gt=0, description="Latency for CRITICAL (ms, or 5s; guide: > 5 s).")
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
        return url


def _shutdown(sock: socket.socket | None) -> None:
    # Wakes a read blocked on the socket in another thread (close alone would not).
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _fetch(ctx: CheckContext, params: GetParams) -> tuple[int, bytes, str]:
    """Status, body (its first MAX_BODY bytes) and charset, within the check's deadline as a whole: a
    server answering one byte at a time is cut off at the deadline, not after each slow read."""
    import http.client

    parts = urlsplit(params.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn: Any = kind(parts.hostname or "", parts.port, timeout=min(ctx.settings.connect_timeout, ctx.remaining()))
    try:
        # The watchdog covers the TLS handshake too: a server can drip that as well.
        with ctx.watchdog(lambda: _shutdown(conn.sock)):
            conn.connect()
            conn.sock.settimeout(min(ctx.settings.read_timeout, max(0.01, ctx.remaining())))
            conn.request("GET", target, headers={"User-Agent": "runbook-agent", **params.headers})
            response = conn.getresponse()
            body = bytearray()
            while len(body) < MAX_BODY:
                chunk = response.read1(min(65536, MAX_BODY - len(body)))
                if not chunk:
                    break
                body += chunk
                if ctx.remaining() <= 0:
                    break
        if ctx.remaining() <= 0 and not response.isclosed() and len(body) < MAX_BODY:
            raise TimeoutError
        return response.status, bytes(body), response.headers.get_content_charset() or "utf-8"
    except TimeoutError:
        raise TargetUnreachable("http_timeout", f"{params.url}: no complete answer in time") from None
    except Exception as exc:
        if ctx.remaining() <= 0:  # the watchdog cut a dripping answer off, whatever the client then raised
            raise TargetUnreachable("http_timeout", f"{params.url}: no complete answer in time") from None
        if isinstance(exc, OSError | http.client.HTTPException):
            raise TargetUnreachable("http_unreachable", f"{params.url}: {exc or type(exc).__name__}") from None
        raise
    finally:
        conn.close()


@plugins.check("http.get", GetParams)
def get(ctx: CheckContext, params: GetParams) -> Outcome:
    """GET a URL: the status code is expected, the body holds a substring, the latency is under thresholds."""
    start = time.monotonic()
    status_code, body, charset = _fetch(ctx, params)
    ms = (time.monotonic() - start) * 1000
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    metrics = {"latency_ms": round(ms, 1), "status_code": float(status_code)}
    if status_code not in params.expect_status:
        return Outcome(
            Status.CRITICAL,
            f"HTTP {status_code} from {params.url} in {ms:.0f} ms (expected {params.expect_status})",
            details={"body": text[:200]},
            metrics=metrics,
            code="http_bad_status",
        )
    if params.contains is not None and params.contains not in text:
        return Outcome(
            Status.CRITICAL, f"{params.url}: body lacks {params.contains!r}", metrics=metrics, code="http_bad_body"
        )
    status = above(ms, params.warn_ms, params.crit_ms)
    return Outcome(
        status,
        f"HTTP {status_code} from {params.url} in {ms:.0f} ms",
        metrics=metrics,
        thresholds={"latency_ms": (params.warn_ms, params.crit_ms)},
        code="http_slow" if status is not Status.OK else None,
    )
