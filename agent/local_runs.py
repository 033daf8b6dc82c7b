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
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agent.exceptions import AuditError, RunbookError
from agent.files import open_private, private_dir
from agent.handoff import ROUTE
from agent.loader import digest
from agent.paths import DAEMON_SOCKET, DAEMON_TOKEN, env_digest, files_digest
from agent.server import over_unix_socket

if TYPE_CHECKING:
    from agent.daemon import Daemon

__all__ = ["LocalRunRequest", "LocalSocket", "add_local_runs"]

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

    @app.post(ROUTE, include_in_schema=False, dependencies=[Depends(caller)])
    def local_run(body: LocalRunRequest) -> dict[str, Any]:
        reason = local.declines(body, daemon)
        if reason is not None:
            raise HTTPException(status_code=409, detail=reason)
        try:
            return run_for_command(daemon, body)
        except RunbookError as exc:  # a param the runbook does not know: the command says it in its words
            raise HTTPException(status_code=409, detail=exc.message) from None


def run_for_command(daemon: Daemon, request: LocalRunRequest) -> dict[str, Any]:
    """Run as `runbook run` would, rendering what it would print for the command's terminal."""
    from rich.console import Console

    from agent.incidents import RunOrigin
    from agent.output import Printer, after_run
    from agent.terminal import printable

    stdout, stderr = io.StringIO(), io.StringIO()
    console = Console(
        file=stdout,
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
        (stderr if err else stdout).write(printable(daemon.redactor.text(text)) + "\n")

    def approve(_: Any, __: Any) -> bool | None:
        return True if request.yes else None

    with printer.progress(spec) as progress:
        # Parameters are checked before anything is recorded: a bad one is declined, not run.
        daemon.executor.resolve_params(daemon.runbooks.runbooks[request.runbook], request.params)
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
        raw=lambda text: print(text, file=stdout),
        echo=echo,
    )
    return {"stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "exit_code": report.exit_status.exit_code}
