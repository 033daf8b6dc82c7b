"""The daemon's HTTP API (FastAPI): alert intake, runs, approvals, health and metrics.

Every /v1 route needs the bearer token (what Alertmanager's http_config.authorization sends); senders
that can sign may also be held to an HMAC-SHA256 signature over timestamp and body. Refusals are
401/403/413/422 with a reason, and start nothing."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.alerts import AlertmanagerPayload, GenericAlert, IncomingAlert
from agent.daemon import Daemon, QueueFull
from agent.exceptions import NotFound, PlanChanged, RunbookError

__all__ = ["ApiSecurity", "create_app"]

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Awaitable[None]
]


class ApiSecurity(BaseModel):
    token: str = Field(min_length=12)
    hmac_secret: str | None = None
    replay_window: float = 300.0
    max_body: int = 1_048_576


class _BodyLimit:
    """Refuse bodies over the limit (413) before anything reads them, declared length or streamed."""

    def __init__(self, app: ASGIApp, limit: int, on_reject: Callable[[], None]) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        self.on_reject()
        body = b'{"detail":"request body over the size limit"}'
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class Accepted(BaseModel):
    accepted: int
    results: list[dict[str, Any]]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approver: str = Field(min_length=1, max_length=200, description="Who decides (recorded in the audit log).")
    remediation: str | None = Field(None, max_length=64, description="Which pending remediation; needed if several.")
    fingerprint: str | None = Field(
        None, max_length=64, description="The plan approved (as shown); a plan that changed since answers 409."
    )
    reason: str = Field("", max_length=500)


def create_app(daemon: Daemon, security: ApiSecurity) -> FastAPI:
    metrics = daemon.metrics

    def refuse(status: int, reason: str, kind: str) -> HTTPException:
        metrics.requests_rejected.labels(reason=kind).inc()
        return HTTPException(status_code=status, detail=reason)

    async def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise refuse(401, "missing bearer token", "unauthenticated")
        if not hmac.compare_digest(token.strip().encode(), security.token.encode()):
            raise refuse(401, "invalid bearer token", "unauthenticated")
        if security.hmac_secret is not None:
            stamp = request.headers.get("x-runbook-timestamp", "")
            signature = request.headers.get("x-runbook-signature", "").removeprefix("sha256=")
            try:
                age = abs(time.time() - float(stamp))
            except ValueError:
                raise refuse(403, "missing or invalid X-Runbook-Timestamp", "bad_signature") from None
            if age > security.replay_window:
                raise refuse(403, "timestamp outside the replay window", "replayed")
            body = await request.body()
            expected = hmac.new(security.hmac_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature.encode(), expected.encode()):
                raise refuse(403, "invalid X-Runbook-Signature", "bad_signature")

    app = FastAPI(
        title="runbook daemon",
        version="1",
        description="Alert intake, runs and approvals of the runbook agent.",
        responses={401: {"description": "no or invalid token"}, 413: {"description": "body too large"}},
    )
    app.add_middleware(
        _BodyLimit,
        limit=security.max_body,
        on_reject=lambda: metrics.requests_rejected.labels(reason="too_large").inc(),
    )
    v1 = [Depends(authorize)]

    @app.exception_handler(RunbookError)
    async def runbook_error(_: Request, exc: RunbookError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, PlanChanged) else 400
        return JSONResponse({"detail": daemon.redactor.text(exc.message), "code": exc.code}, status_code=status)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": f"busy: {exc}; retry later"}, status_code=503, headers={"Retry-After": "30"})

    def shown(run: dict[str, Any]) -> dict[str, Any]:
        """A run as the API shows it: secret params masked, everything redacted."""
        loaded = daemon.runbooks.runbooks.get(run["runbook"])
        secret = {n for n, p in loaded.spec.params.items() if p.secret} if loaded else set()
        run["params"] = {k: ("***" if k in secret else v) for k, v in run["params"].items()}
        redacted: dict[str, Any] = daemon.redactor.data(run)
        return redacted

    def accept(alerts: list[IncomingAlert]) -> Accepted:
        results = daemon.receive(alerts)
        return Accepted(accepted=len(results), results=[r.to_json() for r in results])

    @app.post("/v1/alerts/alertmanager", dependencies=v1, status_code=202, response_model=Accepted)
    def alertmanager(payload: AlertmanagerPayload) -> Accepted:
        """Alertmanager webhook (payload version 4). Answered once every alert is durably recorded."""
        return accept(
            [
                IncomingAlert.build("alertmanager", a.status, a.labels, a.annotations, a.fingerprint)
                for a in payload.alerts
            ]
        )

    @app.post("/v1/alerts", dependencies=v1, status_code=202, response_model=Accepted)
    def generic(alert: GenericAlert) -> Accepted:
        """A generic alert: name and labels, from anything that is not Alertmanager."""
        labels = {**alert.labels, "alertname": alert.name}
        if alert.severity:
            labels["severity"] = alert.severity
        return accept([IncomingAlert.build("generic", alert.status, labels, alert.annotations, alert.fingerprint)])

    @app.get("/v1/runs", dependencies=v1)
    def runs(
        status: Literal["queued", "running", "finished", "interrupted"] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Recent runs, newest first (without their reports)."""
        rows = daemon.state.runs(status=status, limit=max(1, min(limit, 1000)))
        return [shown({k: v for k, v in r.items() if k != "report"}) for r in rows]

    @app.get("/v1/runs/{run_id}", dependencies=v1)
    def run(run_id: str) -> dict[str, Any]:
        """One run with its report: checks, remediations (plans, decisions, outcomes), pending approvals."""
        found = daemon.state.run(run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id!r}")
        found["pending"] = [{"remediation": p[1], "fingerprint": p[2]} for p in daemon.state.pending(run_id)]
        return shown(found)

    @app.post("/v1/runs/{run_id}/approve", dependencies=v1)
    def approve(run_id: str, decision: Decision) -> dict[str, Any]:
        """Approve a pending manual remediation: it is planned again and applied only if the plan is the
        one approved (409 otherwise), within the same limits as any remediation."""
        result = daemon.executor.decide_pending(
            run_id,
            approve=True,
            approver=f"api:{decision.approver}",
            remediation=decision.remediation,
            fingerprint=decision.fingerprint,
        )
        return result.to_json()

    @app.post("/v1/runs/{run_id}/reject", dependencies=v1)
    def reject(run_id: str, decision: Decision) -> dict[str, Any]:
        """Reject a pending manual remediation (recorded; nothing changes)."""
        result = daemon.executor.decide_pending(
            run_id,
            approve=False,
            approver=f"api:{decision.approver}",
            remediation=decision.remediation,
            reason=decision.reason,
        )
        return result.to_json()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, Any]:
        """Ready to take alerts: workers alive, state store readable, not shutting down."""
        try:
            daemon.state.paused()
            store_ok = True
        except Exception:
            store_ok = False
        ready = daemon.ready and store_ok
        response.status_code = 200 if ready else 503
        return {"ready": ready, "state_store": store_ok, "stopping": daemon.stopping.is_set()}

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
