"""Host (psutil), HTTP and TCP checks against this machine and the sandbox app."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.status import Status
from sandbox import stack

pytestmark = pytest.mark.integration
APP = stack.AGENT_ENV["APP_URL"]


def test_disk_memory_load(probe) -> None:
    disk = probe("host.disk", path="/")
    assert disk.status is Status.OK and 0 < disk.metrics["used_pct"] < 100
    # The same real measurement judged against thresholds below it.
    full = probe("host.disk", path="/", warn_pct=0.001, crit_pct=0.002)
    assert (full.status, full.code) == (Status.CRITICAL, "disk_full")
    assert probe("host.memory").status is Status.OK
    assert probe("host.memory", warn_pct=0.001, crit_pct=0.002).status is Status.CRITICAL
    assert probe("host.load").status in (Status.OK, Status.WARNING)
    assert probe("host.load", warn_per_cpu=0.0001, crit_per_cpu=0.0002).status is Status.CRITICAL


def test_cpu_is_sampled_under_real_load(probe) -> None:
    # A busy process on one of two cores (bounded to 5 s) shows in a sampled reading.
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 5\nwhile time.time() < t: pass"])
    try:
        result = probe("host.cpu", sample="1s", warn_pct=20, crit_pct=99)
        # What holds on an idle machine and a busy one alike: the load shows, and is judged by the
        # thresholds (on a machine already busy the reading may reach 100%, CRITICAL).
        assert result.metrics["cpu_pct"] >= 20
        expected = Status.CRITICAL if result.metrics["cpu_pct"] >= 99 else Status.WARNING
        assert result.status is expected
    finally:
        burner.kill()
        burner.wait()


def test_process(probe) -> None:
    assert probe("host.process", name="dockerd").status is Status.OK
    missing = probe("host.process", name="no-such-daemon")
    assert (missing.status, missing.code) == (Status.CRITICAL, "process_missing")


def test_http(probe) -> None:
    healthy = probe("http.get", url=f"{APP}/health", contains="ok")
    assert healthy.status is Status.OK and healthy.metrics["status_code"] == 200
    missing = probe("http.get", url=f"{APP}/nope")
    assert (missing.status, missing.code) == (Status.CRITICAL, "http_bad_status")
    body = probe("http.get", url=f"{APP}/health", contains="version=999")
    assert (body.status, body.code) == (Status.CRITICAL, "http_bad_body")
    slow = probe("http.get", url=f"{APP}/health", warn_ms=0.001, crit_ms=10_000)
    assert (slow.status, slow.code) == (Status.WARNING, "http_slow")
    refused = probe("http.get", url="http://127.0.0.1:1/")
    assert (refused.status, refused.code) == (Status.CRITICAL, "http_unreachable")


def test_tcp(probe) -> None:
    assert probe("tcp.connect", host="127.0.0.1", port=stack.PORTS["db"]).status is Status.OK
    closed = probe("tcp.connect", host="127.0.0.1", port=1)
    assert (closed.status, closed.code) == (Status.CRITICAL, "tcp_refused")
