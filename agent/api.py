"""The daemon's HTTP API (FastAPI): alert intake, runs, approvals and switches, health and metrics.

Two kinds of credential. The intake token (what Alertmanager's http_config.authorization sends) may only
deliver alerts; senders that can sign may also be held to an HMAC over timestamp, method, path and body.
Decision credentials, one per person, read runs and decide: approve, reject, pause, resume, reset; the
person recorded is the credential's, never a name from the body. Refusals are 401/403/413/422 with a
reason and start nothing; 503 (busy, rate limited, audit log unavailable) asks the sender to retry."""

from __future__ import annotations

import codecs
import hashlib
import hmac
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from agent import admin
from agent.alerts import AlertmanagerPayload, GenericAlert, IncomingAlert
from agent.daemon import Daemon, Disposition, QueueFull
from agent.exceptions import AuditError, Conflict, NotFound, RunbookError, StateUnavailable
from agent.ids import NO_NUL, IncidentId, RunId
from agent.server import over_unix_socket

__all__ = ["ApiSecurity", "create_app"]

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Awaitable[None]
]
_PERSON = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_STAMP = re.compile(r"^[0-9]{1,12}$")


class ApiSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    intake_token: str = Field(min_length=12, description="Delivers alerts; nothing else.")
    decision_tokens: dict[str, str] = Field(
        default_factory=dict, description="Person -> token: reads runs and decides, recorded as that person."
    )
    hmac_secret: str | None = None
    replay_window: float = 300.0
    # A group of 10,000 Alertmanager alerts is about 3 MB; the shipped receiver sends at most that many.
    max_body: int = 16 * 1_048_576
    public_metrics: bool = Field(False, description="Serve /metrics and /openapi.json without a credential.")
    alert_rate: float = Field(500.0, gt=0, description="Alerts per second one sender may deliver, sustained.")
    alert_burst: float = Field(20_000.0, gt=0, description="Alerts one sender may deliver at once.")

    @field_validator("decision_tokens")
    @classmethod
    def _people(cls, tokens: dict[str, str]) -> dict[str, str]:
        for person, token in tokens.items():
            if not _PERSON.match(person):
                raise ValueError(f"decision credential name {person!r}: letters, digits and ._@- only")
            if len(token) < 12:
                raise ValueError(f"decision credential of {person}: a token of 12+ characters")
        if len(set(tokens.values())) != len(tokens):
            raise ValueError("two people share a decision token")
        return tokens

    @model_validator(mode="after")
    def _distinct(self) -> ApiSecurity:
        if self.intake_token in self.decision_tokens.values():
            raise ValueError("the intake token must not also be a decision credential")
        return self


class _Gate:
    """Before anything reads a body: a /v1 request without a known credential is refused (401), and a
    body over the limit is refused (413), declared or chunked. Parsing a body costs the event loop, so
    nobody unauthenticated gets to make it do that, and nobody at all past the limit."""

    def __init__(self, app: ASGIApp, guard: _Guard, limit: int) -> None:
        self.app, self.guard, self.limit = app, guard, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if str(scope.get("path", "")).startswith("/local/") and not over_unix_socket(scope):
            return await self._answer(send, 404, "Not Found")  # the local socket's routes exist only there
        if str(scope.get("path", "")).startswith("/v1/") and not self.guard.known(headers.get(b"authorization", b"")):
            self.guard.metrics.requests_rejected.labels(reason="unauthenticated").inc()
            return await self._answer(send, 401, "missing or invalid bearer token")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await self._too_large(send)
            return await self.app(scope, receive, send)
        # No declared length (chunked): read it here, up to the limit, then hand it on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._too_large(send)
            chunks.append(message)
            if not message.get("more_body"):
                break
        await self.app(scope, _replay(chunks), send)

    async def _too_large(self, send: Any) -> None:
        self.guard.metrics.requests_rejected.labels(reason="too_large").inc()
        await self._answer(send, 413, f"request body over the size limit ({self.limit} bytes)")

    @staticmethod
    async def _answer(send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict[str, Any]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


class _RateLimited(Exception):
    pass


class _AlertRate:
    """A token bucket per sender (credential and address), counted in alerts: a storm's one big group
    passes, a sender that keeps flooding is slowed to the sustained rate with 503 + Retry-After (which
    Alertmanager retries; it never retries a 4xx)."""

    def __init__(self, rate: float, burst: float, senders: int = 10_000) -> None:
        self.rate, self.burst, self.senders = rate, burst, senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, sender: str, alerts: int) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(sender, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if alerts > tokens:
                self._buckets[sender] = (tokens, now)
                raise _RateLimited(f"{alerts} alerts over the rate of {self.rate:g}/s; retry later")
            self._buckets[sender] = (tokens - alerts, now)
            while len(self._buckets) > self.senders:
                self._buckets.popitem(last=False)  # the least recently seen sender


class _SeenSignatures:
    """Signatures seen within the replay window: a captured signed request cannot be sent again."""

    def __init__(self, window: float, capacity: int = 100_000) -> None:
        self.window, self.capacity = window, capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, signature: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
                self._seen.popitem(last=False)
            if signature in self._seen:
                return False
            if len(self._seen) >= self.capacity:
                self._seen.popitem(last=False)
            self._seen[signature] = now
            return True


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remediation: str | None = Field(
        None, max_length=64, pattern=NO_NUL, description="Which pending remediation; needed if several."
    )
    fingerprint: str | None = Field(
        None,
        max_length=64,
        pattern=NO_NUL,
        description="The plan approved (as shown): required to approve; a plan that changed since answers 409.",
    )
    reason: str = Field("", max_length=500, pattern=NO_NUL)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500, pattern=NO_NUL, description="Shown with every denial while paused.")


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500, pattern=NO_NUL, description="Why (recorded and told).")


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commander: str = Field(min_length=1, max_length=200, pattern=NO_NUL, description="The incident commander.")


class NoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000, pattern=NO_NUL)


class SeverityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    severity: Literal["SEV-1", "SEV-2", "SEV-3", "SEV-4"]
    reason: str = Field("", max_length=500, pattern=NO_NUL)


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        min_length=1, max_length=300, pattern=NO_NUL, description="The breaker's target, e.g. container:sandbox-app-1."
    )


class Accepted(BaseModel):
    accepted: int
    results: list[dict[str, Any]]


def _printable(value: Any, limit: int = 200) -> str:
    # Error messages echo parts of the request: keep them encodable and short.
    text = str(value).encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= limit else text[:limit] + "..."


class _Guard:
    """Who may do what: checks a request's credential (and signature), answers the person or sender."""

    def __init__(self, security: ApiSecurity, metrics: Any) -> None:
        self.security, self.metrics = security, metrics
        self.rate = _AlertRate(security.alert_rate, security.alert_burst)
        self.seen = _SeenSignatures(security.replay_window)
        self.people = list(security.decision_tokens.items())

    def refuse(self, status: int, reason: str, kind: str) -> HTTPException:
        self.metrics.requests_rejected.labels(reason=kind).inc()
        return HTTPException(status_code=status, detail=reason)

    def bearer(self, request: Request) -> bytes:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self.refuse(401, "missing bearer token", "unauthenticated")
        return token.strip().encode()

    def person_of(self, token: bytes) -> str | None:
        found = None
        for person, expected in self.people:  # every comparison made: the time does not tell which matched
            if hmac.compare_digest(token, expected.encode()):
                found = person
        return found

    def is_intake(self, token: bytes) -> bool:
        return hmac.compare_digest(token, self.security.intake_token.encode())

    def known(self, authorization: bytes) -> bool:
        """Whether an Authorization header carries any credential of this daemon (checked before the
        body is read; each route then requires its own kind)."""
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        return self.is_intake(token) or self.person_of(token) is not None

    async def intake(self, request: Request) -> str:
        """An alert sender: the intake token (and the signature, if required). Returns the sender's key."""
        if not self.is_intake(self.bearer(request)):
            raise self.refuse(401, "invalid bearer token", "unauthenticated")
        if self.security.hmac_secret is not None:
            await self.check_signature(request, self.security.hmac_secret)
        return f"intake@{request.client.host if request.client else '-'}"

    async def check_signature(self, request: Request, secret: str) -> None:
        stamp = request.headers.get("x-runbook-timestamp", "")
        signature = request.headers.get("x-runbook-signature", "").removeprefix("sha256=")
        if not _STAMP.match(stamp):
            raise self.refuse(403, "missing or invalid X-Runbook-Timestamp (unix seconds)", "bad_signature")
        if abs(time.time() - int(stamp)) > self.security.replay_window:
            raise self.refuse(403, "timestamp outside the replay window", "replayed")
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = f"{stamp}.{request.method}.{target}.".encode() + body
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise self.refuse(403, "invalid X-Runbook-Signature", "bad_signature")
        if not self.seen.first_time(signature):
            raise self.refuse(403, "this signed request was already received (replay)", "replayed")

    def decider(self, request: Request) -> str:
        """A person with a decision credential; the name recorded is the credential's."""
        token = self.bearer(request)
        person = self.person_of(token)
        if person is not None:
            return f"api:{person}"
        if self.is_intake(token):
            raise self.refuse(
                403, "the intake token only delivers alerts; this needs a decision credential", "forbidden"
            )
        raise self.refuse(401, "invalid bearer token", "unauthenticated")

    def any_credential(self, request: Request) -> None:
        if self.security.public_metrics:
            return
        token = self.bearer(request)
        if not self.is_intake(token) and self.person_of(token) is None:
            raise self.refuse(401, "invalid bearer token", "unauthenticated")


def _guard(request: Request) -> _Guard:
    guard: _Guard = request.app.state.guard
    return guard


def _person(request: Request) -> str:
    return _guard(request).decider(request)


def _reader(request: Request) -> None:
    _guard(request).any_credential(request)


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], content_type: str, body: bytes) -> _Model:
    """A request body as `model`, or the 422 FastAPI would give (its errors, located under "body"): a
    JSON body only (application/json or a +json type), as FastAPI's own body handling requires."""
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        error = {"type": "model_attributes_type", "loc": ("body",), "msg": "expected a JSON body (application/json)"}
        raise RequestValidationError([error])
    try:
        return model.model_validate_json(body.removeprefix(codecs.BOM_UTF8))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a body a route reads itself (its definitions inlined: a reference into
    the model's own $defs would not resolve from the document's root)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inlined(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inlined(definitions[ref.removeprefix("#/$defs/")])
            return {k: inlined(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inlined(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined(schema)}}}}


Person = Annotated[str, Depends(_person)]


def _accepted(results: list[Disposition]) -> str:
    """The intake's answer (`Accepted`), each result encoded as it is made: a storm's answer never holds
    10,000 result dicts at once (what the daemon's memory keeps of its peaks, glibc and Python keep)."""
    shown = ",".join(json.dumps(r.to_json(), separators=(",", ":")) for r in results)
    return f'{{"accepted":{len(results)},"results":[{shown}]}}'


def create_app(daemon: Daemon, security: ApiSecurity) -> FastAPI:
    metrics = daemon.metrics
    guard = _Guard(security, metrics)

    app = FastAPI(
        title="runbook daemon",
        version="1",
        description="Alert intake, runs and approvals of the runbook agent.",
        responses={401: {"description": "no or invalid credential"}, 413: {"description": "body too large"}},
        # The interactive docs pages load their scripts from a CDN (blank offline): not served.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.guard = guard
    app.add_middleware(_Gate, guard=guard, limit=security.max_body)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One line naming the field and the limit; never the input back (it may be huge or hostile).
        metrics.requests_rejected.labels(reason="invalid").inc()
        errors = [
            {"loc": [_printable(p, 64) for p in e.get("loc", ())], "msg": _printable(e.get("msg", ""))}
            for e in exc.errors()[:10]
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else str(first["msg"])
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(AuditError)
    async def audit_unavailable(_: Request, exc: AuditError) -> JSONResponse:
        # Fail closed, and say so without the log's path: the sender retries once it is repaired.
        metrics.requests_rejected.labels(reason="audit_unavailable").inc()
        return JSONResponse(
            {"detail": "audit log unavailable: nothing is accepted until it is repaired (runbook audit repair)"},
            status_code=503,
            headers={"Retry-After": "60"},
        )

    @app.exception_handler(StateUnavailable)
    async def state_unavailable(_: Request, exc: StateUnavailable) -> JSONResponse:
        # The state database is restarting or failing over: nothing was recorded; the sender retries.
        metrics.requests_rejected.labels(reason="state_unavailable").inc()
        return JSONResponse(
            {"detail": daemon.redactor.text(exc.message), "code": exc.code},
            status_code=503,
            headers={"Retry-After": "10"},
        )

    @app.exception_handler(RunbookError)
    async def runbook_error(_: Request, exc: RunbookError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        return JSONResponse({"detail": daemon.redactor.text(exc.message), "code": exc.code}, status_code=status)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        metrics.requests_rejected.labels(reason="busy").inc()
        return JSONResponse({"detail": f"busy: {exc}; retry later"}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(_RateLimited)
    async def rate_limited(_: Request, exc: _RateLimited) -> JSONResponse:
        metrics.requests_rejected.labels(reason="rate_limited").inc()
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    def shown(run: dict[str, Any]) -> dict[str, Any]:
        """A run as the API shows it: secret params masked, everything redacted."""
        loaded = daemon.runbooks.runbooks.get(run["runbook"])
        secret = {n for n, p in loaded.spec.params.items() if p.secret} if loaded else set()
        run["params"] = {k: ("***" if k in secret else v) for k, v in run["params"].items()}
        redacted: dict[str, Any] = daemon.redactor.data(run)
        return redacted

    async def accept(sender: str, alerts: list[IncomingAlert]) -> Response:
        # Awaits the intake thread's commit on the event loop (no thread per request) and answers with
        # JSON made here: the payload is ours, already checked (`Accepted` documents it).
        guard.rate.take(sender, max(1, len(alerts)))
        results = await daemon.receive_async(alerts)
        if len(results) < 100:
            body = _accepted(results)
        else:  # a storm's answer (~1 MB for 10,000 alerts) is made off the loop too
            body = await run_in_threadpool(_accepted, results)
        return Response(body, status_code=202, media_type="application/json")

    async def read(request: Request, parse: Callable[[str, bytes], list[IncomingAlert]]) -> list[IncomingAlert]:
        """The alerts of a request's body. A big one (a storm's group) is parsed on a worker thread: it
        takes ~100 ms, which the event loop owes every other connection and its timers."""
        body, content_type = await request.body(), request.headers.get("content-type", "")
        if len(body) < 32_768:
            return parse(content_type, body)
        return await run_in_threadpool(parse, content_type, body)

    def from_alertmanager(content_type: str, body: bytes) -> list[IncomingAlert]:
        payload = _validated(AlertmanagerPayload, content_type, body)
        return [
            IncomingAlert.build("alertmanager", a.status, a.labels, a.annotations, a.fingerprint, a.startsAt)
            for a in payload.alerts
        ]

    def from_generic(content_type: str, body: bytes) -> list[IncomingAlert]:
        alert = _validated(GenericAlert, content_type, body)
        labels = {**alert.labels, "alertname": alert.name}
        if alert.severity:
            labels["severity"] = alert.severity
        return [IncomingAlert.build("generic", alert.status, labels, alert.annotations, alert.fingerprint)]

    # The two intake routes read and check their bodies themselves, straight from the bytes (pydantic-core
    # parses the JSON): the same models and the same 422 as FastAPI's own body handling, at a fraction of
    # its cost per request — what a storm of single-alert deliveries is made of.
    invalid_body: dict[int | str, dict[str, Any]] = {
        422: {"description": "the body is not a valid payload (the field and the reason)"}
    }

    @app.post(
        "/v1/alerts/alertmanager",
        status_code=202,
        response_model=Accepted,
        responses=invalid_body,
        openapi_extra=_body(AlertmanagerPayload),
    )
    async def alertmanager(request: Request) -> Response:
        """Alertmanager webhook (payload version 4). Answered once every alert is durably recorded."""
        sender = await guard.intake(request)
        return await accept(sender, await read(request, from_alertmanager))

    @app.post(
        "/v1/alerts",
        status_code=202,
        response_model=Accepted,
        responses=invalid_body,
        openapi_extra=_body(GenericAlert),
    )
    async def generic(request: Request) -> Response:
        """A generic alert: name and labels, from anything that is not Alertmanager."""
        sender = await guard.intake(request)
        return await accept(sender, await read(request, from_generic))

    @app.get("/v1/runs")
    def runs(
        _: Person,
        status: Literal["queued", "running", "finished", "interrupted"] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Recent runs, newest first (without their reports)."""
        rows = daemon.state.runs(status=status, limit=max(1, min(limit, 1000)))
        return [shown({k: v for k, v in r.items() if k != "report"}) for r in rows]

    @app.get("/v1/runs/{run_id}")
    def run(run_id: RunId, _: Person) -> dict[str, Any]:
        """One run with its report: checks, remediations (plans, decisions, outcomes), pending approvals."""
        found = daemon.state.run(run_id)
        if found is None:
            raise HTTPException(404, f"no run {_printable(run_id, 64)!r}")
        found["pending"] = [{"remediation": p[1], "fingerprint": p[2]} for p in daemon.state.pending(run_id)]
        return shown(found)

    @app.post("/v1/runs/{run_id}/approve")
    def approve(run_id: RunId, decision: Decision, person: Person) -> dict[str, Any]:
        """Approve a pending manual remediation: it is planned again and applied only if the plan is the
        one approved (409 otherwise), within the same limits as any remediation. A dry-run daemon, or a
        dry run's plan, answers 409. The fingerprint is required: what is approved is a plan someone saw,
        never whatever is pending now (a replaced plan nobody was shown)."""
        if not decision.fingerprint:
            raise HTTPException(422, "approving needs the fingerprint of the plan approved (GET /v1/runs/RUN_ID)")
        result = daemon.executor.decide_pending(
            run_id, approve=True, approver=person, remediation=decision.remediation, fingerprint=decision.fingerprint
        )
        daemon.guarded(daemon.incidents.after_decision, run_id, result, person)
        return result.to_json()

    @app.post("/v1/runs/{run_id}/reject")
    def reject(run_id: RunId, decision: Decision, person: Person) -> dict[str, Any]:
        """Reject a pending manual remediation (recorded; nothing changes)."""
        result = daemon.executor.decide_pending(
            run_id, approve=False, approver=person, remediation=decision.remediation, reason=decision.reason
        )
        daemon.guarded(daemon.incidents.after_decision, run_id, result, person)
        return result.to_json()

    # --- incidents ----------------------------------------------------------------------------------------

    @app.get("/v1/incidents")
    def incidents(
        _: Person,
        status: Literal["open", "investigating", "identified", "monitoring", "resolved"] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Incidents, newest first."""
        rows = daemon.incidents.store.find(status=status, limit=max(1, min(limit, 1000)))
        return [daemon.redactor.data(r.to_json()) for r in rows]

    def incident_shown(incident_id: int) -> dict[str, Any]:
        shown: dict[str, Any] = daemon.redactor.data(daemon.incidents.describe(incident_id))
        return shown

    @app.get("/v1/incidents/{incident_id}")
    def incident(incident_id: IncidentId, _: Person) -> dict[str, Any]:
        """An incident: the record, time to each target, who was paged when, notifications, timeline."""
        return incident_shown(incident_id)

    @app.post("/v1/incidents/{incident_id}/ack")
    def incident_ack(incident_id: IncidentId, person: Person) -> dict[str, Any]:
        """Acknowledge (stops the acknowledgement ladder of the escalation path)."""
        daemon.incidents.acknowledge(incident_id, person)
        return incident_shown(incident_id)

    @app.post("/v1/incidents/{incident_id}/assign")
    def incident_assign(incident_id: IncidentId, body: AssignRequest, person: Person) -> dict[str, Any]:
        """Assign the incident commander."""
        daemon.incidents.assign(incident_id, body.commander, person)
        return incident_shown(incident_id)

    @app.post("/v1/incidents/{incident_id}/note")
    def incident_note(incident_id: IncidentId, body: NoteRequest, person: Person) -> dict[str, Any]:
        """Add a note to the timeline."""
        daemon.incidents.note(incident_id, body.text, person)
        return incident_shown(incident_id)

    @app.post("/v1/incidents/{incident_id}/severity")
    def incident_severity(incident_id: IncidentId, body: SeverityRequest, person: Person) -> dict[str, Any]:
        """Change the severity (recorded and told)."""
        daemon.incidents.set_severity(incident_id, body.severity, person, body.reason)
        return incident_shown(incident_id)

    @app.post("/v1/incidents/{incident_id}/resolve")
    def incident_resolve(incident_id: IncidentId, body: ReasonRequest, person: Person) -> dict[str, Any]:
        """Resolve (stops every escalation)."""
        daemon.incidents.resolve(incident_id, person, body.reason)
        return incident_shown(incident_id)

    def admin_audit(person: str) -> Any:
        return daemon.audit.bind(actor=person, mode="admin")

    @app.post("/v1/pause")
    def pause(body: PauseRequest, person: Person) -> dict[str, Any]:
        """Deny every remediation (checks still run) until resumed."""
        admin.pause(daemon.state, admin_audit(person), person, body.reason)
        return {"paused": True, "by": person, "reason": body.reason}

    @app.post("/v1/resume")
    def resume(person: Person) -> dict[str, Any]:
        """Allow remediations again."""
        admin.resume(daemon.state, admin_audit(person), person)
        return {"paused": False, "by": person}

    @app.post("/v1/breakers/reset")
    def reset(body: ResetRequest, person: Person) -> dict[str, Any]:
        """Close a target's circuit breaker (a person has looked)."""
        admin.reset_breaker(daemon.state, admin_audit(person), body.target)
        return {"target": body.target, "closed": True, "by": person}

    # The web console (/ui): pages for people, signed in with their decision credential.
    from agent.console import mount

    mount(app, daemon, guard.person_of)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, Any]:
        """Ready to take alerts: workers alive, state store readable, audit log writable, not stopping."""
        try:
            daemon.state.paused()
            store_ok = True
        except Exception:
            store_ok = False
        ready = daemon.ready and store_ok
        response.status_code = 200 if ready else 503
        return {
            "ready": ready,
            "state_store": store_ok,
            "audit_log": daemon.audit_error is None,
            "stopping": daemon.stopping.is_set(),
        }

    @app.get("/metrics", dependencies=[Depends(_reader)])
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_reader)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    return app
