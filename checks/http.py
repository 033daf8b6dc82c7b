"""HTTP checks: status code, body substring and latency of an endpoint (the guide's health checks)."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from agent.context import CheckContext
from agent.exceptions import TargetUnreachable
from agent.plugins import Outcome, PluginSet
from agent.status import Status
from checks._thresholds import above

plugins = PluginSet("http")


class GetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="URL to GET (credentials in it are masked in all output).")
    expect_status: list[int] = Field([200], description="Status codes that count as healthy.")
    contains: str | None = Field(None, description="Text the body must contain.")
    warn_ms: float | None = Field(1000.0, gt=0, description="Latency (ms) for WARNING.")
    crit_ms: float | None = Field(5000.0, gt=0, description="Latency (ms) for CRITICAL (guide: > 5 s).")
    headers: dict[str, str] = Field(default_factory=dict)


@plugins.check("http.get", GetParams)
def get(ctx: CheckContext, params: GetParams) -> Outcome:
    """GET a URL: the status code is expected, the body holds a substring, the latency is under thresholds."""
    import httpx

    timeout = httpx.Timeout(ctx.settings.read_timeout, connect=ctx.settings.connect_timeout)
    start = time.monotonic()
    try:
        response = httpx.get(params.url, headers=params.headers, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        raise TargetUnreachable("http_timeout", f"{params.url}: timed out") from None
    except httpx.TransportError as exc:
        raise TargetUnreachable("http_unreachable", f"{params.url}: {exc}") from None
    ms = (time.monotonic() - start) * 1000
    metrics = {"latency_ms": round(ms, 1), "status_code": float(response.status_code)}
    if response.status_code not in params.expect_status:
        return Outcome(
            Status.CRITICAL,
            f"HTTP {response.status_code} from {params.url} in {ms:.0f} ms (expected {params.expect_status})",
            details={"body": response.text[:200]},
            metrics=metrics,
            code="http_bad_status",
        )
    if params.contains is not None and params.contains not in response.text:
        return Outcome(
            Status.CRITICAL, f"{params.url}: body lacks {params.contains!r}", metrics=metrics, code="http_bad_body"
        )
    status = above(ms, params.warn_ms, params.crit_ms)
    return Outcome(
        status,
        f"HTTP {response.status_code} from {params.url} in {ms:.0f} ms",
        metrics=metrics,
        code="http_slow" if status is not Status.OK else None,
    )
