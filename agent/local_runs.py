"""The daemon's side of agent.handoff: `runbook run` on this host hands its run over a Unix socket.

The socket lives in the state directory (0700) and is itself 0600; a token in a 0600 file beside it is
checked too, so reaching the socket through a directory made readable by mistake is not enough, and the
route answers nothing over TCP. The daemon declines (409, before the run starts; the command then runs
it itself) unless the run would be the one the command would do: the same runbooks directory with the
same files as loaded, the same environment values for the settings and templates, the same config and
policy files as at start, and a live run only from a live daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import io
import json
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agent.exceptions import AuditError, RunbookError
from agent.files import open_private, private_dir
from agent.handoff import ANSWER_ROUTE, PROTOCOL, ROUTE
from agent.loader import digest
from agent.paths import (
    DAEMON_LOCK,
    DAEMON_SOCKET,
    DAEMON_TOKEN,
    ENV_NAMES,
    SETTING_VARIABLES,
    env_digest,
    files_digest,
    secret_files,
)
from agent.server import over_unix_socket
from agent.terminal import APPROVE_PROMPT, printable

if TYPE_CHECKING:
    from agent.daemon import Daemon

__all__ = ["LocalRunRequest", "LocalSocket", "LocalSocketUnavailable", "add_local_runs"]

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
    protocol: int = Field(0, description="The command's handoff protocol: a different one is declined.")
    cwd: str = Field("", max_length=4096, description="Where relative paths in the settings resolve.")


class _Taken(Exception):
    pass


class LocalSocketUnavailable(Exception):
    """The local socket could not be made (another daemon has it, a path too long, no permission)."""


_PATH_SETTINGS = (
    "runbooks_dir",
    "state_dir",
    "audit_log",
    "policy_file",
    "backup_dir",
    "docker_cert_path",
    "docker_ssh_identity",
    "docker_ssh_known_hosts",
)


def _relative_paths(env: dict[str, str], settings: Any) -> bool:
    """Whether a path the daemon works with is relative (to its own working directory): from any of the
    variables that set one, or from its config file."""
    names = ["RUNBOOK_CONFIG", *(name for setting in _PATH_SETTINGS for name in SETTING_VARIABLES[setting])]
    if any(env.get(n) and not Path(env[n]).is_absolute() for n in names):
        return True
    if getattr(settings, "docker_tls", False) and not settings.docker_certs.is_absolute():
        return True  # ~/.docker with a relative HOME
    return any(
        getattr(settings, s, None) is not None and not Path(getattr(settings, s)).is_absolute() for s in _PATH_SETTINGS
    )


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
    cwd: str
    lock: int  # an fd holding an flock on STATE_DIR/daemon.lock for the daemon's life (released if killed)

    @classmethod
    def bind(
        cls,
        state_dir: Path,
        runbooks_dirs: list[Path],
        config_file: Path | None,
        policy_file: Path | None,
        *,
        loaded: tuple[str, str],
    ) -> tuple[LocalSocket, socket.socket]:
        """Listen at STATE_DIR/daemon.sock; None (and why) if another daemon does, or it cannot be made —
        the daemon then runs without it: alert intake never depends on the local socket.

        `loaded`: the digests of the config and secret files, and of the policy file, taken before the
        daemon read them. The socket hands runs over only to a command whose files match what the daemon
        *read*: if one changed since (a secret rotated while it started), there is no socket."""

        def read_now() -> tuple[str, str]:
            return files_digest([config_file, *secret_files()]), files_digest([policy_file])

        now = read_now()
        if now != loaded and now == read_now():
            raise LocalSocketUnavailable(
                "the config, policy or a secret file changed while the daemon started (restart it to hand runs over)"
            )
        # Equal: what was read (the same sum as agent.paths.run_files_digest). Never equal twice (a pipe, a
        # device, a file over the size bound): a digest no command matches; commands then run themselves.
        digest = (
            hashlib.sha256(f"{loaded[0]}:{loaded[1]}".encode()).hexdigest()
            if now == loaded
            else "unmatchable:" + secrets.token_hex(16)
        )
        path = state_dir / DAEMON_SOCKET
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lock = -1
        try:
            private_dir(state_dir)
            # One daemon per state directory has the socket: whoever holds this lock. The kernel lets go
            # of it when its holder dies, so a killed daemon's files are taken over, a live one's never.
            lock = open_private(state_dir / DAEMON_LOCK, os.O_RDWR)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _Taken(f"another daemon has {path}") from None
            if path.exists() or path.is_symlink():
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.settimeout(1.0)
                    probe.connect(str(path))
                    raise _Taken(f"another daemon answers on {path}")
                except OSError:
                    path.unlink()  # left by a daemon that was killed
                finally:
                    probe.close()
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
        except (OSError, _Taken) as exc:
            listener.close()
            if lock >= 0:
                os.close(lock)
            raise LocalSocketUnavailable(str(exc) if isinstance(exc, _Taken) else f"{path}: {exc}") from None
        local = cls(
            path=path,
            token=token,
            runbooks_dirs=tuple(str(p.resolve()) for p in runbooks_dirs),
            env=dict(os.environ),
            files_digest=digest,
            cwd=os.getcwd(),
            lock=lock,
        )
        return local, listener

    def close(self) -> None:
        """Remove the socket and token (ours: the lock is still held), then let go of the lock."""
        for name in (DAEMON_SOCKET, DAEMON_TOKEN):
            with contextlib.suppress(OSError):
                (self.path.parent / name).unlink()
        with contextlib.suppress(OSError):
            os.close(self.lock)

    def declines(self, request: LocalRunRequest, daemon: Daemon) -> str | None:
        """Why this daemon would not do the run the command would do, or None."""
        if tuple(request.runbooks) != self.runbooks_dirs:
            return "the daemon loaded another runbooks directory"
        if digest([Path(p) for p in self.runbooks_dirs]) != daemon.runbooks.digest:
            return "the runbook files changed since the daemon loaded them"
        if request.protocol != PROTOCOL:
            return "the command speaks another version of the handoff"
        # Every variable the settings, the templates or libpq read here must have been compared.
        needed = set(ENV_NAMES) | set(daemon.settings.template_env) | {n for n in self.env if n.startswith("PG")}
        if not needed <= set(request.env_names):
            return "the command did not compare every environment variable the daemon's run reads"
        if request.cwd != self.cwd and _relative_paths(self.env, daemon.settings):
            return "relative paths in the settings would resolve elsewhere"
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
    runs: set[threading.Thread] = set()  # in flight: shutdown waits for them as for the daemon's own
    daemon.local_runs = runs

    @app.post(ROUTE, include_in_schema=False, dependencies=[Depends(caller)])
    async def local_run(body: LocalRunRequest, request: Request) -> Any:
        reason = await asyncio.to_thread(local.declines, body, daemon)
        if reason is not None:
            raise HTTPException(status_code=409, detail=reason)
        try:  # before anything is recorded: a bad param is declined, and the command says it in its words
            daemon.executor.resolve_params(daemon.runbooks.runbooks[body.runbook], body.params)
        except RunbookError as exc:
            raise HTTPException(status_code=409, detail=exc.message) from None
        # From here on the run is the daemon's: whatever happens, the command hears an outcome (200, or
        # the stream's end), never an answer it could take for a refusal and run again itself.
        stream = _Stream(questions, daemon)
        ask = stream.ask if body.interactive else None
        worker = threading.Thread(
            target=stream.run,
            args=(lambda: run_for_command(daemon, body, stream, ask, stream.stop),),
            name="local-run",
            daemon=True,
        )
        runs.add(worker)
        worker.start()
        if body.interactive:  # a person at the command: lines as they come, each approval asked there
            return StreamingResponse(stream.events(request, runs, worker), media_type="application/x-ndjson")
        end = await stream.wait_end(request, runs, worker)
        return {"stdout": stream.text(), **end}

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

    def ask(self, send: Callable[[dict[str, Any]], None], prompt: str, stop: threading.Event) -> bool | None:
        """Send the question and wait for its answer; None (the plan left pending, as without a terminal)
        if none comes within ASK_TIMEOUT or the command goes away meanwhile."""
        question = secrets.token_hex(16)
        answered, slot = threading.Event(), dict[str, bool]()
        with self._lock:
            self._waiting[question] = (answered, slot)
        try:
            send({"ask": {"id": question, "prompt": prompt}})
            deadline = time.monotonic() + ASK_TIMEOUT
            while not answered.wait(0.2):
                if stop.is_set() or time.monotonic() >= deadline:
                    return None
            return slot.get("approve")
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
    """One handed-over run: what it prints (kept, or streamed as newline-delimited JSON events: {"out":
    text}, {"ask": {id, prompt}} when a plan waits for the person's y/N, {"end": {stderr, exit_code}}),
    and its stop switch — set when the command goes away (Ctrl-C, a closed terminal) or the daemon stops,
    so that, as when a run in the command is interrupted, no further change starts."""

    def __init__(self, questions: _Questions, daemon: Daemon) -> None:
        self._questions, self._daemon = questions, daemon
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._out: list[str] = []
        self.stop = threading.Event()
        # Made in the endpoint, on the event loop: the run's thread wakes the loop for each event.
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()

    def _put(self, event: dict[str, Any]) -> None:
        self._queue.put(event)
        self._loop.call_soon_threadsafe(self._ready.set)

    def write(self, text: str) -> int:  # the run's console writes here
        if text:
            self._out.append(text)
            self._put({"out": text})
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self._out)

    def ask(self, prompt: str) -> bool | None:
        return self._questions.ask(self._put, prompt, self.stop)

    def run(self, work: Callable[[], tuple[str, int]]) -> None:
        try:
            stderr, exit_code = work()
        except Exception as exc:  # the run itself recorded what it could; the command hears UNKNOWN
            error = printable(self._daemon.redactor.text(f"{type(exc).__name__}: {exc}"))
            stderr, exit_code = f"runbook: error: the daemon's run failed: {error}\n", 3
        self._put({"end": {"stderr": stderr, "exit_code": exit_code}})

    async def _next(self, request: Request) -> dict[str, Any]:
        """The next event; meanwhile, a command that went away or a daemon that stops ends the run's
        changes (the stop switch)."""
        while True:
            for _ in range(2):  # before and after clearing the wake-up: an event put in between is not missed
                try:
                    return self._queue.get_nowait()
                except queue.Empty:
                    self._ready.clear()
            if self._daemon.stopping.is_set() or await request.is_disconnected():
                self.stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 0.2)

    async def wait_end(self, request: Request, runs: set[threading.Thread], worker: threading.Thread) -> dict[str, Any]:
        try:
            while True:
                event = await self._next(request)
                if "end" in event:
                    return dict(event["end"])
        finally:
            runs.discard(worker)

    async def events(
        self, request: Request, runs: set[threading.Thread], worker: threading.Thread
    ) -> AsyncIterator[bytes]:
        try:
            while True:
                event = await self._next(request)
                yield (json.dumps(event) + "\n").encode()
                if "end" in event:
                    return
        finally:
            # The stream ends early only when the command went away: nothing further starts.
            if worker.is_alive():
                self.stop.set()
            runs.discard(worker)


def run_for_command(
    daemon: Daemon,
    request: LocalRunRequest,
    out: Any,
    ask: Callable[[str], bool | None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[str, int]:
    """Run as `runbook run` would, rendering what it would print for the command's terminal into `out`;
    (what it prints on stderr, exit code). With `ask`, manual remediations are asked of the person."""
    from rich.console import Console

    from agent.incidents import RunOrigin
    from agent.output import Printer, after_run

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
            stop=stop or daemon.stopping,
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
        output="json" if request.as_json else "text",
        printer=printer,
        raw=lambda text: print(text, file=out),
        echo=echo,
    )
    return stderr.getvalue(), report.exit_status.exit_code
