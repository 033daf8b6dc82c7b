"""The daemon's side of agent.handoff: `runbook run` on this host hands its run over a Unix socket.

The socket lives in the state directory (0700) and is itself 0600; a token in a 0600 file beside it is
checked too, so reaching the socket through a directory made readable by mistake is not enough, and the
route answers nothing over TCP. The daemon declines (409, before the run starts; the command then runs
it itself) unless the run would be the one the command would do: the same runbooks directory with the
same files as loaded, the same environment values for the settings and templates, the same config and
policy files as at start, and a live run only from a live daemon.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import os
import queue
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agent.exceptions import AuditError, RunbookError
from agent.files import open_private, private_dir
from agent.handoff import ANSWER_ROUTE, ROUTE
from agent.loader import digest
from agent.paths import DAEMON_SOCKET, DAEMON_TOKEN, env_digest, files_digest
from agent.server import over_unix_socket

if TYPE_CHECKING:
    from agent.daemon import Daemon

__all__ = ["LocalRunRequest", "LocalSocket", "add_local_runs"]

ASK_TIMEOUT = 300.0  # seconds a streamed run waits for the person's y/N before leaving the plan pending
_Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Value = Annotated[str, StringConstraints(max_length=65_536)]


class LocalRunRequest(BaseModel):
    """What `runbook run` sends: its arguments, and what the daemon compares before it agrees."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    runbook: str = Field(min_length=1, max_length=200)
    params: dict[_Name, _Value] = Field(default_factory=dict, max_length=256)
    dry_run: bool = False
    yes: bool = False
    as_json: bool = Field(False, alias="json")
    actor: str = Field(min_length=1, max_length=256)
    runbooks: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(max_length=64)
    env_names: list[_Name] = Field(max_length=256)
    env_digest: str = Field(max_length=64)
    files_digest: str = Field(max_length=64)
    width: int = Field(80, ge=20, le=1000)
    color: bool = False
    interactive: bool = Field(False, description="A person at the command answers approvals: stream, and ask.")


class LocalAnswer(BaseModel):
    """A person's answer, at the command, to a question a streamed run asked."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    approve: bool


@dataclass(frozen=True)
class LocalSocket:
    """The socket's place and credential, and what the daemon was started with (to compare against)."""

    path: Path
    token: str
    runbooks_dirs: tuple[str, ...]
    env: dict[str, str]
    files_digest: str

    @classmethod
    def bind(
        cls, state_dir: Path, runbooks_dirs: list[Path], config_file: Path | None, policy_file: Path | None
    ) -> tuple[LocalSocket, socket.socket] | None:
        """Listen at STATE_DIR/daemon.sock, or None if another daemon already does."""
        private_dir(state_dir)
        path = state_dir / DAEMON_SOCKET
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(str(path))
                return None  # someone answers there: leave it to them
            except OSError:
                path.unlink()  # left by a daemon that was killed
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600, never briefly wider
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        listener.listen(64)
        token = secrets.token_hex(32)
        fd = open_private(state_dir / DAEMON_TOKEN, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        local = cls(
            path=path,
            token=token,
            runbooks_dirs=tuple(str(p.resolve()) for p in runbooks_dirs),
            env=dict(os.environ),
            files_digest=files_digest([config_file, policy_file]),
        )
        return local, listener

    def close(self) -> None:
        for name in (DAEMON_SOCKET, DAEMON_TOKEN):
            with contextlib.suppress(OSError):
                (self.path.parent / name).unlink()

    def declines(self, request: LocalRunRequest, daemon: Daemon) -> str | None:
        """Why this daemon would not do the run the command would do, or None."""
        if tuple(request.runbooks) != self.runbooks_dirs:
            return "the daemon loaded another runbooks directory"
        if digest([Path(p) for p in self.runbooks_dirs]) != daemon.runbooks.digest:
            return "the runbook files changed since the daemon loaded them"
        if not set(daemon.settings.template_env) <= set(request.env_names):
            return "the daemon's templates read environment variables the command did not compare"
        if env_digest(self.env, request.env_names) != request.env_digest:
            return "the command's environment differs from the daemon's"
        if request.files_digest != self.files_digest:
            return "the config or policy file differs from what the daemon loaded"
        if not request.dry_run and daemon.dry_run:
            return "a live run asked of a dry-run daemon"
        if request.runbook not in daemon.runbooks.runbooks:
            return f"unknown runbook {request.runbook!r}"
        if daemon.stopping.is_set():
            return "the daemon is stopping"
        return None


def add_local_runs(app: FastAPI, daemon: Daemon, local: LocalSocket) -> None:
    def caller(request: Request) -> None:
        if not over_unix_socket(request.scope) or request.scope["server"][0] != str(local.path):
            raise HTTPException(status_code=404, detail="Not Found")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), local.token.encode()):
            raise HTTPException(status_code=403, detail="invalid local token")

    questions = _Questions()

    @app.post(ROUTE, include_in_schema=False, dependencies=[Depends(caller)])
    def local_run(body: LocalRunRequest) -> Any:
        reason = local.declines(body, daemon)
        if reason is not None:
            raise HTTPException(status_code=409, detail=reason)
        try:  # before anything is recorded: a bad param is declined, and the command says it in its words
            daemon.executor.resolve_params(daemon.runbooks.runbooks[body.runbook], body.params)
        except RunbookError as exc:
            raise HTTPException(status_code=409, detail=exc.message) from None
        if not body.interactive:
            out = io.StringIO()
            stderr, exit_code = run_for_command(daemon, body, out)
            return {"stdout": out.getvalue(), "stderr": stderr, "exit_code": exit_code}
        # A person at the command: lines as they come, and each approval asked there, mid-run.
        stream = _Stream(questions)
        worker = threading.Thread(
            target=stream.run, args=(lambda: run_for_command(daemon, body, stream, stream.ask),), daemon=True
        )
        worker.start()
        return StreamingResponse(stream.events(), media_type="application/x-ndjson")

    @app.post(ANSWER_ROUTE, include_in_schema=False, dependencies=[Depends(caller)])
    def local_answer(body: LocalAnswer) -> dict[str, bool]:
        if not questions.answer(body.id, body.approve):
            raise HTTPException(status_code=404, detail="no such question waiting (answered, or timed out)")
        return {"answered": True}


class _Questions:
    """The approvals streamed runs are waiting on, by question id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, dict[str, bool]]] = {}

    def ask(self, send: Callable[[dict[str, Any]], None], prompt: str) -> bool | None:
        """Send the question and wait for its answer; None (left pending, as without a terminal) if none
        comes within ASK_TIMEOUT - the command was interrupted, or nobody is there."""
        question = secrets.token_hex(16)
        answered, slot = threading.Event(), dict[str, bool]()
        with self._lock:
            self._waiting[question] = (answered, slot)
        try:
            send({"ask": {"id": question, "prompt": prompt}})
            return slot.get("approve") if answered.wait(ASK_TIMEOUT) else None
        finally:
            with self._lock:
                self._waiting.pop(question, None)

    def answer(self, question: str, approve: bool) -> bool:
        with self._lock:
            waiting = self._waiting.get(question)
            if waiting is None:
                return False
            waiting[1]["approve"] = approve
            waiting[0].set()
            return True


class _Stream:
    """One interactive run, as newline-delimited JSON events: {"out": text} as the command would print
    it, {"ask": {id, prompt}} when a plan waits for the person's y/N, and {"end": {stderr, exit_code}}."""

    def __init__(self, questions: _Questions) -> None:
        self._questions = questions
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def write(self, text: str) -> int:  # the run's console writes here
        if text:
            self._queue.put({"out": text})
        return len(text)

    def flush(self) -> None:
        pass

    def ask(self, prompt: str) -> bool | None:
        return self._questions.ask(self._queue.put, prompt)

    def run(self, work: Callable[[], tuple[str, int]]) -> None:
        try:
            stderr, exit_code = work()
        except Exception as exc:  # the run itself recorded what it could; the command hears UNKNOWN
            stderr, exit_code = f"runbook: error: the daemon's run failed: {type(exc).__name__}: {exc}\n", 3
        self._queue.put({"end": {"stderr": stderr, "exit_code": exit_code}})

    def events(self) -> Iterator[bytes]:
        while True:
            event = self._queue.get()
            yield (json.dumps(event) + "\n").encode()
            if "end" in event:
                return


def run_for_command(
    daemon: Daemon, request: LocalRunRequest, out: Any, ask: Callable[[str], bool | None] | None = None
) -> tuple[str, int]:
    """Run as `runbook run` would, rendering what it would print for the command's terminal into `out`;
    (what it prints on stderr, exit code). With `ask`, manual remediations are asked of the person."""
    from rich.console import Console

    from agent.incidents import RunOrigin
    from agent.output import APPROVE_PROMPT, Printer, after_run
    from agent.terminal import printable

    stderr = io.StringIO()
    console = Console(
        file=out,
        width=request.width,
        force_terminal=request.color,
        no_color=not request.color,
        highlight=False,
        soft_wrap=True,
        emoji=False,
    )
    printer = Printer(daemon.redactor, enabled=not request.as_json, console=console, spinner=False)
    spec = daemon.runbooks.runbooks[request.runbook].spec

    def echo(text: str, *, err: bool = False) -> None:  # as the command's own: masked, control codes escaped
        print(printable(daemon.redactor.text(text)), file=stderr if err else out)

    def approve(step: Any, plan: Any) -> bool | None:
        if request.yes:
            return True
        if ask is None:
            return None
        printer.show_approval(step, plan)
        return ask(APPROVE_PROMPT)

    with printer.progress(spec) as progress:
        report = daemon.executor.run(
            request.runbook,
            overrides=request.params,
            dry_run=request.dry_run or daemon.dry_run,
            actor=request.actor,
            progress=progress,
            approve=approve,
            stop=daemon.stopping,
        )
    daemon.metrics.observe(report)
    record, trouble = None, None
    try:
        record = daemon.incidents.after_run(report, RunOrigin(request.actor))
    except Exception as exc:
        trouble = daemon.redactor.text(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(AuditError):
            daemon.audit.record("incident_update_failed", run_id=report.run_id, error=trouble)
    after_run(
        report,
        record,
        trouble,
        as_json=request.as_json,
        printer=printer,
        raw=lambda text: print(text, file=out),
        echo=echo,
    )
    return stderr.getvalue(), report.exit_status.exit_code
