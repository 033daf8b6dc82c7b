"""`runbook run`, handed to the local daemon: the same run, output, exit code and audit record, without
importing and connecting everything afresh.

The daemon listens on a Unix socket in the state directory (0700) and checks a token kept beside it
(0600): only whoever can read that directory can hand it a run. The CLI falls back to running the
runbook itself whenever the daemon declines before the run starts (another runbooks directory, files
changed since the daemon loaded them, a live run asked of a dry-run daemon, a bad param) — so the
local path produces every error message. Once the run has started, it is never started again here: a
daemon that goes away mid-run leaves an UNKNOWN outcome and the run in `runbook runs`.

Only the standard library, and not even http.client: this module is the whole of the cold start it
exists to shorten (agent.entry), and http.client's import (email, ssl) alone was a sixth of it. The
peer is our own daemon (uvicorn) on our own socket, so the HTTP spoken here is the small subset it
answers with: one request per connection, a Content-Length or chunked body, every size bounded.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from agent.exceptions import RunbookError
from agent.paths import DAEMON_SOCKET, DAEMON_TOKEN, ENV_NAMES, env_digest, run_files_digest

TYPE_CHECKING = False  # typing and dataclasses are a tenth of this path's imports: for the checker only
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "PROTOCOL",
    "Handed",
    "HandoffLost",
    "actor",
    "answer",
    "hand_over",
    "remember",
    "request_for",
    "run_once",
]

PROTOCOL = 1  # what the command and the daemon say to each other; a daemon of another version declines
CONNECT_TIMEOUT = 1.0
ROUTE = "/local/v1/run"
ANSWER_ROUTE = "/local/v1/answer"
# Answers given before a run starts (credential, request, the daemon's conditions, busy): run it here.
DECLINED = frozenset({403, 404, 409, 413, 422, 503})
MAX_EVENT = 1 << 22  # bytes of one streamed event (a line of output, a question) at most
MAX_ANSWER = 1 << 26  # bytes of a whole answer (a run's output) at most
MAX_HEAD_LINE = 1 << 16  # bytes of the status line, a header line or a chunk-size line
MAX_HEADERS = 100

# Answers agent.entry got before handing the command line to the CLI (a declined run, a lost one), by
# request: the CLI, making the same request, takes the answer instead of asking the daemon again. Taken
# once: a second run in the same process (tests) asks afresh.
_remembered: dict[str, Handed | RunbookError | None] = {}


class Handed:
    """What the daemon's run printed, and the exit code it ended with."""

    __slots__ = ("exit_code", "stderr", "stdout")

    def __init__(self, stdout: str, stderr: str, exit_code: int) -> None:
        self.stdout, self.stderr, self.exit_code = stdout, stderr, exit_code


class HandoffLost(Exception):
    """The daemon took the run and then did not answer: the run may have happened; never run it again."""


class _BadAnswer(Exception):
    """The daemon's bytes were not the HTTP it speaks (or exceeded a bound)."""


def actor() -> str:
    """Who is running it: the person at the terminal, on this host (the runs' and the audit's actor)."""
    return f"{getpass.getuser()}@{os.uname().nodename}"  # gethostname(2), without importing socket


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(str(path))
        # The process listening is this user's (whatever the files say): params may hold secrets.
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            raise OSError(f"the process on {path} runs as uid {uid}, not as this user")
        sock.settimeout(None)  # a run takes as long as its checks and verifications; so does a local one
    except OSError:
        sock.close()
        raise
    return sock


def _send(sock: socket.socket, route: str, token: str, body: bytes) -> None:
    head = (
        f"POST {route} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode("latin-1") + body)


class _Response:
    """The daemon's answer: its status, then its body read whole or line by line as it streams."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        status = self._line()
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _BadAnswer(f"not an HTTP status line: {status[:80]!r}")
        self.status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS):
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadAnswer("too many header lines")
        self._chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            raise _BadAnswer(f"a bad Content-Length: {length[:40]!r}")
        self._left = int(length) if length is not None and not self._chunked else None

    def _line(self) -> bytes:
        line = self._file.readline(MAX_HEAD_LINE + 2)
        if not line.endswith(b"\n"):
            raise _BadAnswer("the answer ended early" if len(line) <= MAX_HEAD_LINE else "a header line too long")
        return line.rstrip(b"\r\n")

    def _pieces(self) -> Iterator[bytes]:
        """The body's bytes as they arrive: chunks, up to Content-Length, or up to the connection's close."""
        if self._chunked:
            while True:
                size_line = self._line().split(b";", 1)[0].strip()
                # Hex digits only: int() would also take `-3`, `0x10` or `1_0` (a negative size reads
                # to the end of the stream, unbounded).
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_line):
                    raise _BadAnswer(f"a bad chunk size: {size_line[:40]!r}")
                size = int(size_line, 16)
                if size == 0:
                    return  # (no trailers from this daemon; the connection closes)
                if size > MAX_EVENT:
                    raise _BadAnswer("a chunk larger than any event")
                data = self._file.read(size + 2)
                if len(data) != size + 2 or data[size:] != b"\r\n":
                    raise _BadAnswer("a chunk cut short or not ended by CRLF")
                yield data[:size]
        left = self._left
        while left is None or left > 0:
            data = self._file.read1(65536 if left is None else min(left, 65536))
            if not data:
                if left:
                    raise _BadAnswer("the answer ended early")
                return
            if left is not None:
                left -= len(data)
            yield data

    def read(self) -> bytes:
        body = bytearray()
        for piece in self._pieces():
            body += piece
            if len(body) > MAX_ANSWER:
                raise _BadAnswer("an answer larger than any run's output")
        return bytes(body)

    def lines(self) -> Iterator[bytes]:
        """The body's lines (each at most MAX_EVENT bytes), the last one possibly without its newline."""
        pending = b""
        for piece in self._pieces():
            pending += piece
            *complete, pending = pending.split(b"\n")
            yield from complete
            if len(pending) > MAX_EVENT:
                raise _BadAnswer("an event larger than MAX_EVENT")
        if pending:
            yield pending

    def close(self) -> None:
        self._file.close()


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
    except (OSError, ValueError):  # unreadable, or not text: not a daemon to hand anything to
        return None
    if not token or not _ours(path):
        return None
    try:
        sock = _connect(path)
    except OSError:
        return None  # a socket left by a daemon killed -9, or one not listening yet
    response: _Response | None = None
    try:
        streamed = write is not None and ask is not None
        body = json.dumps({**request, "interactive": streamed}).encode()
        try:
            _send(sock, ROUTE, token, body)
            response = _Response(sock)
            if streamed and response.status == 200:
                assert write is not None and ask is not None
                return _follow(response, path, token, write, ask)
            data = response.read()
        except (OSError, _BadAnswer) as exc:
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
        if response is not None:
            response.close()
        sock.close()


def _follow(
    response: _Response,
    path: Path,
    token: str,
    write: Callable[[str], None],
    ask: Callable[[str], bool],
) -> Handed:
    """Read a streamed run's events to its end, answering its questions."""
    for line in response.lines():
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
    raise HandoffLost("the local daemon stopped in the middle of the run")


def _answer(path: Path, token: str, question: str, approve: bool) -> None:
    """Send the person's y/N. An answer refused (the question timed out first) leaves the plan pending,
    as the run then says."""
    sock = _connect(path)
    try:
        _send(sock, ANSWER_ROUTE, token, json.dumps({"id": question, "approve": approve}).encode())
        response = _Response(sock)
        try:
            response.read()
        finally:
            response.close()
    except _BadAnswer as exc:
        raise OSError(f"the local daemon's answer was not understood: {exc}") from None
    finally:
        sock.close()


def request_for(
    runbook_id: str,
    params: dict[str, str],
    *,
    dry_run: bool,
    as_json: bool,
    yes: bool,
    runbooks_dirs: Sequence[Path],
    config_file: Path | None,
    policy_file: Path | None,
) -> dict[str, Any]:
    """What the command asks of the daemon, with what the daemon compares before it agrees to do the run
    this command would have done (environment and files as digests: their values never leave here)."""
    # libpq reads PG* variables beside the DSN: compared too, with every name either side has.
    names = [*ENV_NAMES, *sorted(n for n in os.environ if n.startswith("PG"))]
    return {
        "runbook": runbook_id,
        "params": params,
        "dry_run": dry_run,
        "yes": yes,
        "json": as_json,
        "actor": actor(),
        "runbooks": [str(p.resolve()) for p in runbooks_dirs],
        "env_names": names,
        "env_digest": env_digest(os.environ, names),
        "cwd": os.getcwd(),
        "protocol": PROTOCOL,
        "files_digest": run_files_digest(config_file, policy_file),
        **terminal(),
    }


def answer(state_dir: Path, request: dict[str, Any]) -> Handed | RunbookError | None:
    """hand_over() for this process's terminal: the Handed, None (run it here), or the RunbookError
    (exit 3) to report when the run was handed and then lost or interrupted. A run a person may be
    asked to approve is streamed: its lines appear as they come and the question is asked here,
    mid-run, as in a run done here."""
    interactive = not (request["dry_run"] or request["yes"] or request["json"])
    interactive = interactive and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        if interactive:
            return hand_over(state_dir, request, write=_write, ask=_ask)
        return hand_over(state_dir, request)
    except KeyboardInterrupt:
        return _interrupted()
    except HandoffLost as exc:
        return _lost(exc)


def remember(request: dict[str, Any], answered: Handed | RunbookError | None) -> None:
    _remembered[_key(request)] = answered


def run_once(state_dir: Path, request: dict[str, Any]) -> Handed | None:
    """The answer to this request remembered by agent.entry, else the daemon's: the Handed, or None
    (run it here); raises the RunbookError of a run handed and lost."""
    key = _key(request)
    answered = _remembered.pop(key) if key in _remembered else answer(state_dir, request)
    if isinstance(answered, RunbookError):
        raise answered
    return answered


def _key(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, default=str)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _ask(prompt: str) -> bool:
    from agent.terminal import is_yes

    try:
        return is_yes(input(prompt))
    except EOFError:
        return False


def _interrupted() -> RunbookError:
    """Ctrl-C during a handed run. The daemon sees the command go: its run starts no further change, as
    a run here would not."""
    stopped = RunbookError("interrupted: the local daemon stops the run's changes; see `runbook runs`")
    stopped.exit_code = 3
    return stopped


def _lost(exc: HandoffLost) -> RunbookError:
    error = RunbookError(f"{exc}; see `runbook runs` for what it did")
    error.exit_code = 3  # UNKNOWN: the run may have found or changed anything
    return error


def terminal() -> dict[str, Any]:
    """How the daemon should render for this terminal (rich's own choices, made here)."""
    color = os.isatty(1) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    try:
        width = os.get_terminal_size(1).columns
    except OSError:
        width = int(os.environ.get("COLUMNS", "80") or 80)
    return {"width": max(20, min(width, 1000)), "color": bool(color)}
