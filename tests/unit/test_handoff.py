"""The command's side of the local handoff (agent.handoff, agent.entry) without a daemon: the HTTP it
reads from the daemon's socket, every bound on it, and which command lines take the fast path."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import handoff
from agent.entry import _plain_run


@pytest.fixture
def state(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    (directory / "daemon.token").write_text("t0ken\n")
    os.chmod(directory / "daemon.token", 0o600)
    return directory


class FakeDaemon:
    """Listens on STATE/daemon.sock and answers each connection with the next canned bytes."""

    def __init__(self, state: Path, answers: list[bytes]) -> None:
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(state / "daemon.sock"))
        finally:
            os.umask(old)
        self.listener.listen(4)
        self.answers = answers
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for answer in self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                for piece in answer.split(b"|"):  # sent in pieces: reads must not assume one recv
                    conn.sendall(piece)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def serve(state: Path) -> Iterator[object]:
    daemons: list[FakeDaemon] = []

    def start(*answers: bytes) -> FakeDaemon:
        for daemon in daemons:  # one at a time, as on the real socket
            daemon.close()
        (state / "daemon.sock").unlink(missing_ok=True)
        daemons.append(FakeDaemon(state, list(answers)))
        return daemons[-1]

    yield start
    for daemon in daemons:
        daemon.close()


REQUEST = {"runbook": "db-connection", "dry_run": True, "yes": False, "json": False}


def json_answer(status: int, document: object) -> bytes:
    body = json.dumps(document).encode()
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n|%s" % (
        status,
        len(body),
        body,
    )


def test_a_whole_answer_is_read_and_the_request_carries_the_token(state: Path, serve) -> None:
    daemon = serve(json_answer(200, {"stdout": "Verdict: OK\n", "stderr": "", "exit_code": 0}))
    handed = handoff.hand_over(state, REQUEST)
    assert handed is not None and (handed.stdout, handed.exit_code) == ("Verdict: OK\n", 0)
    head, _, body = daemon.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /local/v1/run HTTP/1.1\r\n") and b"Authorization: Bearer t0ken" in head
    assert json.loads(body)["runbook"] == "db-connection"


def test_a_refusal_before_the_run_means_run_it_here(state: Path, serve) -> None:
    serve(json_answer(409, {"detail": "the runbook files changed"}))
    assert handoff.hand_over(state, REQUEST) is None


def test_a_streamed_run_is_followed_across_chunk_boundaries_and_its_question_answered(state: Path, serve) -> None:
    events = b"".join(
        json.dumps(e).encode() + b"\n"
        for e in (
            {"out": "line one\n"},
            {"ask": {"id": "q1", "prompt": "Apply? "}},
            {"end": {"stderr": "", "exit_code": 1}},
        )
    )
    # Chunks that split events (and one event over two chunks), a chunk extension, then the last chunk.
    chunks = [events[:7], events[7:30], events[30:]]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    stream = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body
    daemon = serve(stream[:20] + b"|" + stream[20:61] + b"|" + stream[61:], json_answer(200, {"answered": True}))
    written: list[str] = []
    asked: list[str] = []
    handed = handoff.hand_over(state, REQUEST, write=written.append, ask=lambda p: asked.append(p) or True)
    assert handed is not None and handed.exit_code == 1
    assert written == ["line one\n"] and asked == ["Apply? "]
    assert json.loads(daemon.requests[1].partition(b"\r\n\r\n")[2]) == {"id": "q1", "approve": True}


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",  # not HTTP
        b'HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{"stdout": ',  # ends early
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",  # a bad length
        b"HTTP/1.1 200 OK\r\nx: " + b"a" * (handoff.MAX_HEAD_LINE + 10) + b"\r\n\r\n",  # a header line too long
        b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * (handoff.MAX_HEADERS + 1) + b"\r\n",  # too many headers
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!",
        b"HTTP/1.1 500 Internal\r\ncontent-length: 0\r\n\r\n",  # it had the run: an error is not a refusal
        b"",  # closed without a word
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-3\r\n" + b"x" * 100,  # a negative size
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",  # no CRLF after
    ],
)
def test_an_answer_not_understood_once_the_run_was_taken_is_lost_never_run_again(
    state: Path, serve, answer: bytes
) -> None:
    serve(answer)
    with pytest.raises(handoff.HandoffLost):
        handoff.hand_over(state, REQUEST)


def test_a_streamed_event_larger_than_its_bound_is_refused(state: Path, serve) -> None:
    piece = b"x" * handoff.MAX_EVENT
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(2))  # two chunks, no newline
    serve(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
    with pytest.raises(handoff.HandoffLost, match="larger"):
        handoff.hand_over(state, REQUEST, write=lambda _: None, ask=lambda _: False)


def test_no_daemon_or_an_unsafe_socket_means_run_it_here(state: Path, serve) -> None:
    assert handoff.hand_over(state, REQUEST) is None  # nothing listening
    serve(json_answer(200, {"stdout": "", "stderr": "", "exit_code": 0}))
    os.chmod(state / "daemon.sock", 0o666)  # a socket others could reach is not a daemon to trust
    assert handoff.hand_over(state, REQUEST) is None


def test_the_entry_points_answer_is_taken_by_the_cli_once(state: Path, serve) -> None:
    """agent.entry asks first and remembers the answer; the CLI, making the same request, takes it
    instead of asking again; a later run in the same process asks afresh."""
    daemon = serve(json_answer(409, {"detail": "declined"}), json_answer(409, {"detail": "declined"}))
    request = {**REQUEST, "dry_run": True}
    handoff.remember(request, handoff.answer(state, request))
    assert handoff.run_once(state, request) is None and len(daemon.requests) == 1  # taken, not asked
    assert handoff.run_once(state, request) is None and len(daemon.requests) == 2  # a new run asks
    serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", json_answer(409, {"detail": "declined"}))
    lost = handoff.answer(state, request)  # handed, then not understood: UNKNOWN, never run again
    assert isinstance(lost, handoff.RunbookError) and lost.exit_code == 3
    handoff.remember(request, lost)
    with pytest.raises(handoff.RunbookError, match=r"not understood"):
        handoff.run_once(state, request)
    assert handoff.run_once(state, {**request, "runbook": "other"}) is None  # another request: asked


@pytest.mark.parametrize(
    ("argv", "plain"),
    [
        (["run", "db-connection"], ("db-connection", {}, {"dry_run": False, "as_json": False, "yes": False})),
        (
            ["run", "--dry-run", "db-connection", "-p", "a=1", "--param", "b=x=y", "--json", "-y"],
            ("db-connection", {"a": "1", "b": "x=y"}, {"dry_run": True, "as_json": True, "yes": True}),
        ),
        (["run"], None),  # the CLI's usage error
        (["run", "a", "b"], None),
        (["run", "a", "-p", "novalue"], None),  # the CLI's message for a malformed --param
        (["run", "a", "-p"], None),
        (["run", "a", "-p", "--dry-run"], None),
        (["run", "a", "--param=a=1"], None),
        (["run", "a", "--runbooks", "x"], None),
        (["run", "a", "--param-file", "-"], None),  # never read stdin here, then again in the CLI
        (["-v", "run", "a"], None),
        (["--config", "c.yaml", "run", "a"], None),
        (["list"], None),
        ([], None),
    ],
)
def test_only_plain_run_command_lines_take_the_fast_path(argv: list[str], plain: object) -> None:
    assert _plain_run(argv) == plain
