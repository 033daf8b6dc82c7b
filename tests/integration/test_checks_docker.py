"""Docker checks against the real engine: a healthy and a failing case for each."""

from __future__ import annotations

import time

import pytest

from agent import context
from agent.config import Settings
from agent.status import Status
from checks import _cgroups
from sandbox import faults, stack

pytestmark = pytest.mark.integration


def test_engine(probe, tmp_path) -> None:
    assert probe("docker.engine").status is Status.OK
    result = probe("docker.engine", settings=Settings(state_dir=tmp_path, docker_host="tcp://127.0.0.1:1"))
    assert (result.status, result.code) == (Status.CRITICAL, "docker_unreachable")


def test_engine_gone_after_a_warm_process_negotiated(probe, tmp_path, monkeypatch) -> None:
    # A warm process does not ping an engine it has spoken to: one gone since is found by the check's
    # own first call, and reported as unreachable (not as a check error).
    gone = f"unix://{tmp_path}/gone.sock"
    monkeypatch.setitem(context._NEGOTIATED, gone, "1.41")
    settings = Settings(state_dir=tmp_path, docker_host=gone)
    for check, with_ in (("docker.engine", {}), ("docker.container", {"service": "app"})):
        result = probe(check, settings=settings, **with_)
        assert (result.status, result.code) == (Status.CRITICAL, "docker_unreachable"), result


def test_container_running_exited_and_missing(probe, throwaway) -> None:
    result = probe("docker.container", service="app")
    assert result.status is Status.OK and result.details["containers"][0]["name"] == "sandbox-app-1"
    exited = throwaway(["sh", "-c", "exit 3"])
    exited.wait(timeout=30)
    result = probe("docker.container", container=exited.name)
    assert (result.status, result.code) == (Status.CRITICAL, "container_not_running")
    assert result.details["containers"][0]["exit_code"] == 3
    result = probe("docker.container", service="no-such-service")
    assert (result.status, result.code) == (Status.CRITICAL, "container_missing")


def test_container_oom_killed(probe, throwaway) -> None:
    hog = throwaway(["python3", "-c", "x = bytearray(256 * 2**20)"], mem_limit="64m", memswap_limit="64m")
    hog.wait(timeout=60)
    result = probe("docker.container", container=hog.name)
    assert result.status is Status.CRITICAL
    facts = result.details["containers"][0]
    assert facts["oom_killed"] is True and facts["exit_code"] == 137
    assert "OOMKilled" in result.summary


def test_container_unhealthy(probe, throwaway) -> None:
    sick = throwaway(
        ["sleep", "60"],
        healthcheck={"test": ["CMD", "false"], "interval": 200_000_000, "retries": 1, "timeout": 1_000_000_000},
    )
    assert faults.wait_for(
        lambda: sick.client.api.inspect_container(sick.id)["State"]["Health"]["Status"] == "unhealthy"
    )
    result = probe("docker.container", container=sick.name)
    assert (result.status, result.code) == (Status.CRITICAL, "container_unhealthy")


def test_replicas(probe) -> None:
    result = probe("docker.replicas", service="worker", min=1)
    assert result.status is Status.OK and result.metrics["replicas"] == 1
    result = probe("docker.replicas", service="worker", min=1, expected=3)
    assert (result.status, result.code) == (Status.WARNING, "replicas_below_expected")
    result = probe("docker.replicas", service="worker", min=2)
    assert (result.status, result.code) == (Status.CRITICAL, "replicas_below_min")


def test_log_matches(probe, throwaway) -> None:
    noisy = throwaway(
        ["sh", "-c", "for i in 1 2 3; do echo 'ERROR Database connection error: refused'; done; sleep 60"]
    )
    assert faults.wait_for(lambda: b"refused" in noisy.logs())
    result = probe("docker.log_matches", container=noisy.name, pattern="Database connection error", since="5m")
    assert (result.status, result.code) == (Status.CRITICAL, "log_pattern_found")
    assert result.metrics["matches"] == 3
    result = probe("docker.log_matches", container=noisy.name, pattern="OutOfMemory", since="5m")
    assert result.status is Status.OK


def test_log_matches_reads_lines_as_written(probe, throwaway) -> None:
    # Lines are matched as UTF-8 bytes: a non-ASCII pattern still matches case-insensitively, invalid
    # UTF-8 becomes U+FFFD in what is shown, and a TTY container's log (no stream framing) reads the same.
    script = r"printf 'ERROR Datenbank nicht erreichbar: caf\303\251 \377\n'; sleep 60"
    for tty in (False, True):
        noisy = throwaway(["sh", "-c", script], tty=tty)
        assert faults.wait_for(lambda noisy=noisy: b"caf" in noisy.logs())
        result = probe("docker.log_matches", container=noisy.name, pattern="DATENBANK.*CAFÉ", ignore_case=True)
        assert (result.status, result.metrics["matches"]) == (Status.CRITICAL, 1.0), (tty, result)
        assert result.details["samples"][0].endswith("café \ufffd"), result.details


def test_error_rate(probe, throwaway) -> None:
    faults.traffic(20)
    result = probe("docker.error_rate", service="app", window="5m")
    assert result.status is Status.OK and result.metrics["requests"] >= 20
    line = '172.18.0.1 - - [28/Nov/2026 10:00:00] "GET / HTTP/1.1" {} -'
    script = (
        f"for i in $(seq 30); do echo '{line.format(200)}'; done; "
        f"for i in $(seq 10); do echo '{line.format(500)}'; done; sleep 60"
    )
    failing = throwaway(["sh", "-c", script])
    assert faults.wait_for(lambda: failing.logs().count(b"\n") >= 40)
    result = probe("docker.error_rate", container=failing.name, window="5m")
    assert (result.status, result.code) == (Status.CRITICAL, "error_rate_high")
    assert result.metrics == {"requests": 40.0, "errors": 10.0, "error_pct": 25.0}
    # A line the pattern matches without its status group (optional here) is not a request it can judge.
    pattern = r'"GET / HTTP/1.1" (?:(?P<status>5\d\d)|200) '
    result = probe("docker.error_rate", container=failing.name, window="5m", status_pattern=pattern)
    assert result.metrics == {"requests": 10.0, "errors": 10.0, "error_pct": 100.0}, result


def test_stats(probe, throwaway) -> None:
    result = probe("docker.stats", service="app")
    assert result.status is Status.OK and 0 < result.metrics["mem_pct"] < 80
    hog = throwaway(["python3", "-c", "import time; x = bytearray(50 * 2**20); time.sleep(60)"], mem_limit="64m")
    time.sleep(2)
    result = probe("docker.stats", container=hog.name, mem_warn_pct=70, mem_crit_pct=75)
    assert (result.status, result.code) == (Status.CRITICAL, "resource_use_high")
    assert result.metrics["mem_pct"] >= 75


def test_stats_measures_cpu_between_two_quick_readings(probe, throwaway, monkeypatch) -> None:
    # One spinning process: at least a good share of one CPU even on a busy machine (a reading without a
    # previous one to compare with would show ~0%), measured from its cgroup without the engine's 1 s wait.
    spinner = throwaway(["python3", "-c", "while True: pass"])
    time.sleep(1)
    readings = []
    read = _cgroups.read
    monkeypatch.setattr(_cgroups, "read", lambda *a: readings.append(a) or read(*a))
    result = probe("docker.stats", container=spinner.name, cpu_warn_pct=5, cpu_crit_pct=1000)
    assert result.metrics["cpu_pct"] > 10, result
    assert (result.status, result.code) == (Status.WARNING, "resource_use_high")
    assert len(readings) == 2  # from the kernel's counters, not the engine's one-second sample
    # Where the cgroups are not ours to read (a remote engine), the engine's stats say the same.
    monkeypatch.setattr(_cgroups, "local_engine", lambda _: False)
    result = probe("docker.stats", container=spinner.name, cpu_warn_pct=5, cpu_crit_pct=1000)
    assert result.metrics["cpu_pct"] > 10 and len(readings) == 2, result


def test_sandbox_is_compose_labelled(dc) -> None:
    app = dc.containers.get("sandbox-app-1")
    assert app.labels["com.docker.compose.project"] == stack.PROJECT
    assert app.labels["com.docker.compose.service"] == "app"
    assert app.attrs["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "58080"}]


def test_throwaway_containers_are_testcontainers_from_the_local_image_without_ryuk(dc, throwaway) -> None:
    container = throwaway(["sleep", "60"])
    assert container.labels["org.testcontainers"] == "true" and container.labels["io.runbook.test"] == "1"
    assert container.image.tags == [stack.IMAGE] or stack.IMAGE in container.image.tags
    # No reaper: its image is in a registry this machine cannot reach; each fixture removes its own.
    assert not [c for c in dc.containers.list(all=True) if any("ryuk" in tag for tag in c.image.tags)]


def test_a_log_read_is_bounded_in_bytes_and_samples_are_cut(probe, throwaway) -> None:
    # `tail` counts lines, and a line may be any length: 4 MiB without a newline, then the line a check
    # looks for. The read keeps the newest bytes (1 MiB here), from the first whole line in them.
    from agent.docker_engine import read_logs

    script = "head -c 4194304 /dev/zero | tr '\\0' x; echo; echo 'ERROR Database connection error'; sleep 60"
    for tty in (False, True):
        noisy = throwaway(["sh", "-c", script], tty=tty)
        assert faults.wait_for(lambda noisy=noisy: b"Database connection error" in noisy.logs(tail=1))
        raw = read_logs(noisy, since=0, tail=20_000, max_bytes=1 << 20)
        assert raw.rstrip() == b"ERROR Database connection error", (tty, raw[:80])
    # What a check shows of a long matching line is cut: it goes to the audit log, the API, the console.
    long_line = throwaway(["sh", "-c", "printf 'Database connection error %05000d\\n' 0; sleep 60"])
    assert faults.wait_for(lambda: b"Database connection error" in long_line.logs())
    result = probe("docker.log_matches", container=long_line.name, pattern="Database connection error")
    (sample,) = result.details["samples"]
    assert result.metrics["matches"] == 1 and len(sample) == len(f"{long_line.name}: ") + 1_000
