"""`runbook run`, handed to the local daemon: the same run, output, exit code and audit record, without
importing and connecting everything afresh.

The daemon listens on a Unix socket in the state directory (0700) and checks a token kept beside it
(0600): only whoever can read that directory can hand it a run. The CLI falls back to running the
runbook itself whenever the daemon declines before the run starts (another runbooks directory, files
changed since the daemon loaded them, a live run asked of a dry-run daemon, a bad param) — so the
local path produces every error message. Once the run has started, it is never started again here: a
daemon that goes away mid-run leaves an UNKNOWN outcome and the run in `runbook runs`.

Only the standard library: this module is on the path of the cold start it exists to shorten.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.paths import DAEMON_SOCKET, DAEMON_TOKEN

__all__ = ["PROTOCOL", "Handed", "HandoffLost", "hand_over"]

PROTOCOL = 1  # what the command and the daemon say to each other; a daemon of another version declines
CONNECT_TIMEOUT = 1.0
ROUTE = "/local/v1/run"
ANSWER_ROUTE = "/local/v1/answer"
# Answers given before a run starts (credential, request, the daemon's conditions, busy): run it here.
DECLINED = frozenset({403, 404, 409, 413, 422, 503})
MAX_EVENT = 1 << 22  # bytes of one streamed event (a line of output, a question) at most


@dataclass(frozen=True)
class Handed:
    """What the daemon's run printed, and the exit code it ended with."""

    stdout: str
    stderr: str
    exit_code: int


class HandoffLost(Exception):
    """The daemon took the run and then did not answer: the run may have happened; never run it again."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=CONNECT_TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(str(self._path))
            # The process listening is this user's (whatever the files say): params may hold secrets.
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                raise OSError(f"the process on {self._path} runs as uid {uid}, not as this user")
            sock.settimeout(None)  # a run takes as long as its checks and verifications; so does a local one
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _ours(path: Path) -> bool:
    """The socket and its directory are this user's alone; anything else is not a daemon to trust."""
    try:
        directory, sock = path.parent.lstat(), path.lstat()
    except OSError:
        return False
    uid = os.getuid()
    private = all(s.st_uid == uid and not s.st_mode & 0o077 for s in (directory, sock))
    return private and stat.S_ISDIR(directory.st_mode) and stat.S_ISSOCK(sock.st_mode)


def hand_over(
    state_dir: Path,
    request: dict[str, Any],
    *,
    write: Callable[[str], None] | None = None,
    ask: Callable[[str], bool] | None = None,
) -> Handed | None:
    """The run done by the local daemon, or None when there is none or it declined (run it here).
    With `write` and `ask` (a person at this terminal) the run is streamed: its lines are written as they
    come and each approval is asked here, mid-run; the Handed's stdout is then already written."""
    path, token_file = state_dir / DAEMON_SOCKET, state_dir / DAEMON_TOKEN
    try:
        token = token_file.read_text().strip()
    except OSError:
        return None
    if not token or not _ours(path):
        return None
    connection = _UnixConnection(path)
    try:
        try:
            connection.connect()
        except OSError:
            return None  # a socket left by a daemon killed -9, or one not listening yet
        streamed = write is not None and ask is not None
        body = json.dumps({**request, "interactive": streamed}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            connection.request("POST", ROUTE, body=body, headers=headers)
            response = connection.getresponse()
            if streamed and response.status == 200:
                assert write is not None and ask is not None
                return _follow(response, path, token, write, ask)
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HandoffLost(f"the local daemon took the run and did not answer: {exc}") from None
        if response.status in DECLINED:
            return None  # declined before the run started: the local path says why, in its own words
        if response.status != 200:
            raise HandoffLost(f"the local daemon answered HTTP {response.status} once it had the run")
        try:
            answer = json.loads(data)
            return Handed(str(answer["stdout"]), str(answer["stderr"]), int(answer["exit_code"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise HandoffLost(f"the local daemon's answer was not understood: {exc}") from None
    finally:
        connection.close()


def _follow(
    response: http.client.HTTPResponse,
    path: Path,
    token: str,
    write: Callable[[str], None],
    ask: Callable[[str], bool],
) -> Handed:
    """Read a streamed run's events to its end, answering its questions."""
    while True:
        line = response.readline(MAX_EVENT)
        if not line:
            raise HandoffLost("the local daemon stopped in the middle of the run")
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise HandoffLost(f"the local daemon's answer was not understood: {exc}") from None
        try:
            if "out" in event:
                write(str(event["out"]))
            elif "ask" in event:
                approve = ask(str(event["ask"]["prompt"]))
                _answer(path, token, str(event["ask"]["id"]), approve)
            elif "end" in event:
                return Handed("", str(event["end"]["stderr"]), int(event["end"]["exit_code"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HandoffLost(f"the local daemon's answer was not understood: {exc!r}") from None


def _answer(path: Path, token: str, question: str, approve: bool) -> None:
    connection = _UnixConnection(path)
    try:
        body = json.dumps({"id": question, "approve": approve}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        connection.request("POST", ANSWER_ROUTE, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:  # the question timed out first: the plan stays pending, as the run says
            return
    finally:
        connection.close()


def terminal() -> dict[str, Any]:
    """How the daemon should render for this terminal (rich's own choices, made here)."""
    color = os.isatty(1) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    try:
        width = os.get_terminal_size(1).columns
    except OSError:
        width = int(os.environ.get("COLUMNS", "80") or 80)
    return {"width": max(20, min(width, 1000)), "color": bool(color)}
