"""The console's pages and forms (see agent.console). Every page needs a signed-in person; every form
carries the session's CSRF token; every answer carries headers that keep it out of frames and let no
script or style in from anywhere but here."""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool

from agent import admin, logs
from agent.console.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions
from agent.exceptions import AuditError, NotFound, PlanChanged, RunbookError, StateUnavailable
from agent.ids import IncidentId, RunId

__all__ = ["mount"]

HERE = Path(__file__).resolve().parent
MAX_FORM = 65_536  # bytes of one form: a note of 4,000 characters, escaped, with room to spare
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SEVERITIES = ("SEV-1", "SEV-2", "SEV-3", "SEV-4")
STATUSES = ("investigating", "identified", "monitoring", "resolved")
# What a form that worked says on the page it returns to (a fixed text: nothing from the request).
DONE = {
    "ack": "Acknowledged.",
    "assign": "Commander assigned.",
    "note": "Note added.",
    "severity": "Severity changed.",
    "resolve": "Resolved.",
    "approved": "Approved: the plan was applied and verified.",
    "approved_unverified": "Approved and applied, but not verified: see the outcome below.",
    "approved_not_applied": "Approved, but nothing was applied: see the decision below.",
    "rejected": "Rejected: nothing was changed.",
    "paused": "Remediation paused.",
    "resumed": "Remediation resumed.",
    "reset": "Circuit breaker closed.",
}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _target_text(target: dict[str, Any]) -> str:
    """A severity target as words (the colour is only a second channel): met in 3m, 12m left, missed."""
    state = target.get("state")
    if state == "met":
        return f"met ({_duration(target.get('took_s'))})"
    if state == "missed":
        took = target.get("took_s")
        return f"missed ({_duration(took)})" if took is not None else "missed"
    if state == "running":
        return f"{_duration(target.get('left_s'))} left"
    return str(state or "-")


def _local_path(value: str | None) -> str:
    """Where to go after signing in: a console path of this site only (no other host, no scheme)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        parts = urllib.parse.urlsplit(value)
        if not parts.scheme and not parts.netloc:
            return value
    return "/ui/incidents"


def mount(app: FastAPI, daemon: Any, person_of: Callable[[bytes], str | None]) -> None:
    """Add the console's routes to the daemon's app. `person_of(token)` names the person whose
    decision credential a token is (None: not one)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(duration=_duration, when=_when, target_text=_target_text)
    sessions = Sessions()
    failures = _Failures()

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = _session(request)
        html = env.get_template(name).render(
            person=session.person if session else None,
            csrf=session.csrf if session else "",
            done=DONE.get(request.query_params.get("done", "")),
            now=time.time(),
            dry_run=daemon.dry_run,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def _session(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def signed_in(request: Request) -> Session:
        session = _session(request)
        if session is None:
            raise _Refused(401, "sign in first")
        return session

    async def form(request: Request) -> dict[str, str]:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise _Refused(415, "expected a form (application/x-www-form-urlencoded)")
        # Never more than a form's worth read, declared or chunked: the sign-in form is open to anyone.
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
            raise _Refused(413, f"a form of at most {MAX_FORM} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise _Refused(413, f"a form of at most {MAX_FORM} bytes")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "not a form this console sent") from None
        if any("\x00" in k or "\x00" in v for k, v in pairs):  # PostgreSQL's text cannot hold one
            raise _Refused(400, "a form field holds a NUL character")
        return dict(pairs)

    async def acting(request: Request) -> tuple[str, dict[str, str]]:
        """The signed-in person (as actions are recorded) and their form, its CSRF token checked."""
        session = _session(request)
        if session is None:
            raise _Refused(403, "sign in first")
        fields = await form(request)
        if not session.form_ok(fields.get("csrf", "")):
            raise _Refused(403, "this form is not one the console gave you (its CSRF token is missing or old)")
        return f"console:{session.person}", fields

    def back(path: str, done: str) -> RedirectResponse:
        return RedirectResponse(f"{path}?done={done}", status_code=303, headers=SECURITY_HEADERS)

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        if exc.status == 401 and request.method == "GET" and request.headers.get("sec-fetch-site") == "cross-site":
            # A link from a notification (mail, chat) is a cross-site visit: the browser keeps the
            # SameSite=Strict cookie back. Loaded again from here, the same page gets it (no script).
            return page(request, "reload.html", 200)
        if exc.status == 401 and request.method == "GET":
            target = "/ui/login?" + urllib.parse.urlencode({"next": request.url.path})
            return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        return page(request, "error.html", exc.status, message=exc.message)

    # --- signing in -----------------------------------------------------------------------------------

    @app.get("/ui", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/ui/incidents", status_code=303, headers=SECURITY_HEADERS)

    @app.get("/ui/static/console.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response((HERE / "static" / "console.css").read_bytes(), media_type="text/css", headers=SECURITY_HEADERS)

    def login_page(
        request: Request, status: int = 200, message: str | None = None, after: str | None = None
    ) -> Response:
        token = secrets.token_urlsafe(32)
        after = _local_path(after or request.query_params.get("next"))
        plain = request.url.scheme == "http" and not _local_plain_http(request)
        plain = plain and request.headers.get("x-forwarded-proto", "").lower() != "https"
        response = page(request, "login.html", status, login_csrf=token, message=message, next=after, plain_http=plain)
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=600,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=_secure_cookie(request),
        )
        return response

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request)

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        address = request.client.host if request.client else "-"
        fields = await form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
            raise _Refused(403, "this sign-in form is not one the console gave you; open the sign-in page again")
        # Counted before the credential is looked at, in one step with the limit (nothing awaited from here
        # on): guesses sent at once are each counted, not all let through before the first failure is.
        attempt = failures.take(address)
        if attempt is None:
            raise _Refused(429, "too many failed sign-ins from here; wait a minute")
        person = person_of(fields.get("credential", "").strip().encode())
        if person is None:
            # The intake token, or nothing known: one answer for both (nothing says which it was).
            logs.log(logs.WARNING, "console_sign_in_refused", client=address)
            return login_page(request, 401, "That is not a decision credential of this agent.", fields.get("next"))
        failures.forgive(address, attempt)
        sessions.close(request.cookies.get(COOKIE))  # a session this browser had ends with a new one
        session_id, _ = sessions.open(person)
        daemon.audit.bind(actor=f"console:{person}", mode="admin").record("console_signed_in", person=person)
        response = RedirectResponse(_local_path(fields.get("next")), status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(sessions.life),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=_secure_cookie(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path="/ui")
        return response

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        actor, _ = await acting(request)
        daemon.audit.bind(actor=actor, mode="admin").record("console_signed_out")
        sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/ui/login", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    # --- incidents ------------------------------------------------------------------------------------

    @app.get("/ui/incidents", include_in_schema=False)
    def incidents(request: Request, status: str = "", severity: str = "") -> Response:
        signed_in(request)
        status = status if status in (*STATUSES, "open") else ""
        severity = severity if severity in SEVERITIES else ""
        found = daemon.incidents.store.find(status=status or None, severity=severity or None, limit=100)
        now = time.time()
        rows = [
            {"incident": daemon.redactor.data(i.to_json()), "targets": daemon.incidents.targets(i, now)} for i in found
        ]
        return page(
            request,
            "incidents.html",
            rows=rows,
            status_filter=status,
            severity_filter=severity,
            statuses=STATUSES,
            severities=SEVERITIES,
        )

    def incident_view(incident_id: int) -> dict[str, Any]:
        described: dict[str, Any] = daemon.redactor.data(daemon.incidents.describe(incident_id))
        runs = []
        for run_id in described["runs"]:
            run = daemon.state.run(run_id)
            if run is not None:
                runs.append(daemon.redactor.data(run))
        described["run_records"] = runs
        return described

    @app.get("/ui/incidents/{incident_id}", include_in_schema=False)
    def incident(request: Request, incident_id: IncidentId) -> Response:
        signed_in(request)
        try:
            view = incident_view(incident_id)
        except NotFound as exc:
            raise _Refused(404, exc.message) from None
        return page(request, "incident.html", view=view, severities=SEVERITIES)

    drafting = threading.BoundedSemaphore(2)  # a draft reads the audit log: two at a time at most
    drafts: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
    drafts_lock = threading.Lock()

    def draft(incident_id: int) -> Any:
        """The post-mortem draft and its timeline, made again only when the incident or the audit log
        changed (each view of an incident page asks for its picture)."""
        from agent.incidents.postmortem import draft_postmortem

        incident = daemon.incidents.get(incident_id)
        try:
            size = daemon.settings.audit_path.stat().st_size
        except OSError:
            size = -1
        key = (incident_id, incident.updated, size)
        with drafts_lock:
            if key in drafts:
                return drafts[key]
        with drafting:
            made = draft_postmortem(daemon.incidents, incident_id, daemon.settings.audit_path, "timeline.svg")
        with drafts_lock:  # request threads share the cache
            drafts[key] = made
            while len(drafts) > 20:
                drafts.popitem(last=False)
        return made

    @app.get("/ui/incidents/{incident_id}/timeline.svg", include_in_schema=False)
    def timeline(request: Request, incident_id: IncidentId) -> Response:
        signed_in(request)
        try:
            svg = draft(incident_id).svg
        except NotFound as exc:
            raise _Refused(404, exc.message) from None
        return Response(daemon.redactor.text(svg), media_type="image/svg+xml", headers=SECURITY_HEADERS)

    @app.get("/ui/incidents/{incident_id}/postmortem.md", include_in_schema=False)
    def postmortem(request: Request, incident_id: IncidentId) -> Response:
        signed_in(request)
        try:
            text = draft(incident_id).markdown
        except NotFound as exc:
            raise _Refused(404, exc.message) from None
        return Response(daemon.redactor.text(text), media_type="text/markdown; charset=utf-8", headers=SECURITY_HEADERS)

    async def incident_action(request: Request, incident_id: int, done: str, act: Callable[..., Any]) -> Response:
        actor, fields = await acting(request)
        try:
            await run_in_threadpool(act, actor, fields)
        except (AuditError, StateUnavailable):
            raise  # 503, as the API answers it: nothing was recorded
        except NotFound as exc:
            raise _Refused(404, daemon.redactor.text(exc.message)) from None
        except RunbookError as exc:
            view = await run_in_threadpool(incident_view, incident_id)
            message = daemon.redactor.text(exc.message)
            return page(request, "incident.html", 409, view=view, severities=SEVERITIES, error=message)
        return back(f"/ui/incidents/{incident_id}", done)

    def text(fields: dict[str, str], name: str, limit: int, *, required: bool = False) -> str:
        value = fields.get(name, "").strip()
        if len(value) > limit:
            raise _Refused(422, f"{name}: at most {limit} characters")
        if required and not value:
            raise _Refused(422, f"{name}: required")
        return value

    @app.post("/ui/incidents/{incident_id}/ack", include_in_schema=False)
    async def acknowledge(request: Request, incident_id: IncidentId) -> Response:
        return await incident_action(
            request, incident_id, "ack", lambda actor, _: daemon.incidents.acknowledge(incident_id, actor)
        )

    @app.post("/ui/incidents/{incident_id}/assign", include_in_schema=False)
    async def assign(request: Request, incident_id: IncidentId) -> Response:
        def act(actor: str, fields: dict[str, str]) -> None:
            daemon.incidents.assign(incident_id, text(fields, "commander", 200, required=True), actor)

        return await incident_action(request, incident_id, "assign", act)

    @app.post("/ui/incidents/{incident_id}/note", include_in_schema=False)
    async def note(request: Request, incident_id: IncidentId) -> Response:
        def act(actor: str, fields: dict[str, str]) -> None:
            daemon.incidents.note(incident_id, text(fields, "text", 4000, required=True), actor)

        return await incident_action(request, incident_id, "note", act)

    @app.post("/ui/incidents/{incident_id}/severity", include_in_schema=False)
    async def severity(request: Request, incident_id: IncidentId) -> Response:
        def act(actor: str, fields: dict[str, str]) -> None:
            chosen = fields.get("severity", "")
            if chosen not in SEVERITIES:
                raise _Refused(422, f"severity: one of {', '.join(SEVERITIES)}")
            daemon.incidents.set_severity(incident_id, chosen, actor, text(fields, "reason", 500))

        return await incident_action(request, incident_id, "severity", act)

    @app.post("/ui/incidents/{incident_id}/resolve", include_in_schema=False)
    async def resolve(request: Request, incident_id: IncidentId) -> Response:
        def act(actor: str, fields: dict[str, str]) -> None:
            daemon.incidents.resolve(incident_id, actor, text(fields, "reason", 500))

        return await incident_action(request, incident_id, "resolve", act)

    # --- runs and approvals ----------------------------------------------------------------------------

    def run_view(run_id: str) -> dict[str, Any]:
        found = daemon.state.run(run_id)
        if found is None:
            raise _Refused(404, "no such run")
        loaded = daemon.runbooks.runbooks.get(found["runbook"])
        secret = {n for n, p in loaded.spec.params.items() if p.secret} if loaded else set()
        found["params"] = {k: ("***" if k in secret else v) for k, v in found["params"].items()}
        pending = {name: {"fingerprint": fp, "plan": plan} for name, fp, plan in daemon.state.pending_plans(run_id)}
        found["pending"] = pending
        incident = daemon.incidents.store.of_run(run_id)
        found["incident_id"] = incident.id if incident else None
        view: dict[str, Any] = daemon.redactor.data(found)
        return view

    @app.get("/ui/runs/{run_id}", include_in_schema=False)
    def run(request: Request, run_id: RunId) -> Response:
        signed_in(request)
        return page(request, "run.html", run=run_view(run_id))

    async def decide(request: Request, run_id: str, approve: bool) -> Response:
        actor, fields = await acting(request)
        remediation = text(fields, "remediation", 64, required=True)
        fingerprint = text(fields, "fingerprint", 64, required=approve)

        def act() -> Any:
            result = daemon.executor.decide_pending(
                run_id,
                approve=approve,
                approver=actor,
                remediation=remediation,
                fingerprint=fingerprint or None,
                reason=text(fields, "reason", 500),
            )
            daemon.guarded(daemon.incidents.after_decision, run_id, result, actor)
            return result

        try:
            result = await run_in_threadpool(act)
        except (AuditError, StateUnavailable):
            raise
        except PlanChanged:
            # Nothing applied: the person sees the plan as it is now, and may approve that one.
            view = await run_in_threadpool(run_view, run_id)
            message = "The plan changed since you saw it. Nothing was applied; this is the plan now."
            return page(request, "run.html", 409, run=view, error=message)
        except RunbookError as exc:
            view = await run_in_threadpool(run_view, run_id)
            return page(request, "run.html", 409, run=view, error=daemon.redactor.text(exc.message))
        if not approve:
            return back(f"/ui/runs/{run_id}", "rejected")
        if result.decision != "applied":
            return back(f"/ui/runs/{run_id}", "approved_not_applied")
        return back(f"/ui/runs/{run_id}", "approved" if result.outcome == "resolved" else "approved_unverified")

    @app.post("/ui/runs/{run_id}/approve", include_in_schema=False)
    async def approve(request: Request, run_id: RunId) -> Response:
        return await decide(request, run_id, True)

    @app.post("/ui/runs/{run_id}/reject", include_in_schema=False)
    async def reject(request: Request, run_id: RunId) -> Response:
        return await decide(request, run_id, False)

    # --- status ----------------------------------------------------------------------------------------

    @app.get("/ui/status", include_in_schema=False)
    def status(request: Request) -> Response:
        signed_in(request)
        state = daemon.state
        now = state.now()
        agents = []
        for agent in state.agents():
            if agent.stopped is not None and now - agent.stopped > 3600:
                continue
            alive = agent.stopped is None and now - agent.heartbeat <= daemon.settings.agent_dead_after
            word = "stopped" if agent.stopped else ("stopping" if agent.stopping else "alive") if alive else "lost"
            agents.append({"agent": agent, "state": word, "age": max(0.0, now - agent.heartbeat)})
        return page(
            request,
            "status.html",
            paused=state.paused(),
            breakers=state.breakers(),
            locks=state.locks(),
            agents=agents,
            queue=state.queue(),
            pending=state.pending(),
        )

    async def admin_action(request: Request, done: str, act: Callable[[str, dict[str, str], Any], None]) -> Response:
        actor, fields = await acting(request)
        audit = daemon.audit.bind(actor=actor, mode="admin")
        try:
            await run_in_threadpool(act, actor, fields, audit)
        except (AuditError, StateUnavailable):
            raise
        except NotFound as exc:
            raise _Refused(404, daemon.redactor.text(exc.message)) from None
        except RunbookError as exc:
            raise _Refused(409, daemon.redactor.text(exc.message)) from None
        return back("/ui/status", done)

    @app.post("/ui/pause", include_in_schema=False)
    async def pause(request: Request) -> Response:
        def act(actor: str, fields: dict[str, str], audit: Any) -> None:
            admin.pause(daemon.state, audit, actor, text(fields, "reason", 500))

        return await admin_action(request, "paused", act)

    @app.post("/ui/resume", include_in_schema=False)
    async def resume(request: Request) -> Response:
        def act(actor: str, _: dict[str, str], audit: Any) -> None:
            admin.resume(daemon.state, audit, actor)

        return await admin_action(request, "resumed", act)

    @app.post("/ui/breakers/reset", include_in_schema=False)
    async def reset(request: Request) -> Response:
        def act(_: str, fields: dict[str, str], audit: Any) -> None:
            admin.reset_breaker(daemon.state, audit, text(fields, "target", 300, required=True))

        return await admin_action(request, "reset", act)


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _local_plain_http(request: Request) -> bool:
    """Plain HTTP from this very host (a person on the agent's machine, or a test): the one case where
    a cookie cannot be Secure and need not be."""
    client = request.client.host if request.client else ""
    return request.url.scheme == "http" and client in _LOOPBACK


def _secure_cookie(request: Request) -> bool:
    """Cookies are Secure unless the console is used over plain HTTP on this host. Behind a proxy that
    ends TLS the daemon sees http from the proxy's address, and the browser, which sees https, keeps
    them; over plain HTTP from elsewhere the browser drops them, and nobody signs in (the sign-in page
    says so)."""
    return not _local_plain_http(request)


class _Failures:
    """Failed sign-ins per address: five a minute, then a minute's wait (a bounded table)."""

    def __init__(self, most: int = 5, window: float = 60.0, addresses: int = 10_000) -> None:
        self.most, self.window, self.addresses = most, window, addresses
        self._seen: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str) -> float | None:
        """Count a sign-in attempt as failed until it succeeds (`forgive`); None: over the limit, and not
        counted."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._seen.get(address, []) if now - t < self.window]
            self._seen[address] = recent
            self._seen.move_to_end(address)
            if len(recent) >= self.most:
                return None
            recent.append(now)
            while len(self._seen) > self.addresses:
                self._seen.popitem(last=False)
            return now

    def forgive(self, address: str, attempt: float) -> None:
        """A sign-in that succeeded was no failure."""
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._seen[address].remove(attempt)
