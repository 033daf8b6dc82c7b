"""agent.logs: what an operator's line holds, at which level, redacted, and nothing before configure()."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent import logs
from agent.redaction import Redactor


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("info", "json", Redactor(["s3cr3t-value"]), stream)
    yield stream
    logs.reset()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_nothing_is_logged_until_configured(capsys: pytest.CaptureFixture[str]) -> None:
    logs.reset()
    logs.log(logs.ERROR, "anything", x=1)
    logs.audit_records([{"event": "run_started", "run_id": "r"}])
    assert capsys.readouterr() == ("", "")


def test_a_line_is_json_redacted_levelled_and_short(out: io.StringIO) -> None:
    logs.log(logs.INFO, "alert", alertname="x s3cr3t-value y", reason="password=hunter22", long="z" * 5000)
    logs.log(logs.DEBUG, "below the level")
    [line] = lines(out)
    assert line["event"] == "alert" and line["level"] == "info" and line["timestamp"].endswith("Z")
    assert "s3cr3t-value" not in out.getvalue() and "hunter22" not in out.getvalue()
    assert len(line["long"]) == logs.MAX_VALUE + 1
    # A secret across the cut: masked whole first, so no part of it is left.
    logs.log(logs.INFO, "alert", reason="x" * (logs.MAX_VALUE - 10) + " token=abcdefghijklmnopqrstuvwxyz")
    assert "abcdef" not in out.getvalue()


def test_audit_records_become_short_lines_at_their_level(out: io.StringIO) -> None:
    logs.audit_records(
        [
            {"event": "run_started", "run_id": "r1", "runbook": "db", "seq": 4, "hash": "h", "params": {"a": 1}},
            {"event": "escalation", "run_id": "r1", "remediation": "restart", "reason": "verify failed", "targets": []},
            {"event": "check_result", "run_id": "r1", "id": "pool"},  # debug: below info
            {"event": "apply_started", "run_id": "r1", "plan": {"steps": ["..."]}, "fingerprint": "f"},
            {"event": "alerts_received", "count": 3},  # not an operator's line: the alert lines say it
        ]
    )
    got = lines(out)
    assert [(g["event"], g["level"]) for g in got] == [
        ("run_started", "info"),
        ("escalation", "warning"),
        ("apply_started", "info"),
    ]
    assert got[0] == {**got[0], "run_id": "r1", "runbook": "db"} and not {"seq", "hash", "params"} & set(got[0])
    assert "plan" not in got[2] and got[2]["fingerprint"] == "f"


def test_a_request_line_names_the_route_template_never_the_raw_path(out: io.StringIO) -> None:
    class Route:
        path = "/v1/runs/{run_id}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = Route()  # as Starlette's router sets it
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(_: Any) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/v1/runs/abc?token=x", "client": ("127.0.0.1", 5)}
    asyncio.run(logs.RequestLog(app)(scope, receive, send))
    [line] = lines(out)
    assert (line["route"], line["status"], line["method"], line["peer"]) == (
        "/v1/runs/{run_id}",
        404,
        "GET",
        "127.0.0.1",
    )
    assert "abc" not in out.getvalue() and "token" not in out.getvalue()


def test_the_daemon_logs_without_loading_rich_and_rich_still_loads_after() -> None:
    """structlog would import rich and pygments for tracebacks these logs never render (~4 MB a daemon)."""
    import subprocess
    import sys

    code = (
        "import io, sys\n"
        "from agent import logs\n"
        "from agent.redaction import Redactor\n"
        "out = io.StringIO()\n"
        "logs.configure('info', 'console', Redactor(), out)\n"
        "logs.log(logs.ERROR, 'something_failed', reason='x')\n"
        "print('rich' in sys.modules, 'pygments' in sys.modules, 'something_failed' in out.getvalue())\n"
        "import rich.console\n"
        "print(rich.console.Console is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False", "True", "True"], done.stdout + done.stderr
