"""`runbook run` handed to the local daemon over its Unix socket: the same run, output and exit code, and
the command runs it itself whenever the daemon would not do exactly that run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import faults
from tests.integration.conftest import REPO, cli, run_in_terminal, throwaway_container
from tests.integration.harness import TOKEN, Daemon

pytestmark = pytest.mark.integration


def runs(state: Path) -> list[tuple[str, str, int, str]]:
    """(run id, actor, pid of the process that ran it, status) of the runs a person started, oldest first
    (the daemon's own scheduled sweeps left out)."""
    with sqlite3.connect(state / "state.sqlite3") as db:
        query = "SELECT run_id, actor, pid, status FROM runs WHERE actor NOT LIKE 'schedule%' ORDER BY created"
        return list(db.execute(query))


def plain(text: str) -> str:
    """Output with what differs between two runs of the same checks taken out (ids, timings, counts)."""
    text = re.sub(r"run [0-9a-f]{12}", "run ID", text)
    text = re.sub(r"\(\d+ ms\)|\d+\.\ds|in \d+ ms", "T", text)
    return "\n".join(sorted(re.sub(r"\d+", "N", line).rstrip() for line in text.splitlines()))


@pytest.fixture
def daemon(agent_env: dict[str, str], tmp_path: Path) -> Iterator[Daemon]:
    runbooks = tmp_path / "runbooks"
    shutil.copytree(REPO / "runbooks", runbooks)
    env = {**agent_env, "RUNBOOK_API_TOKEN": TOKEN, "RUNBOOK_DIR": str(runbooks)}
    agent_env.update(RUNBOOK_DIR=str(runbooks))  # the command and the daemon read the same directory
    started = Daemon(env, runbooks, "--dry-run").start()
    yield started
    started.stop()


def test_a_run_is_handed_to_the_local_daemon_with_the_same_output(
    daemon: Daemon, agent_env: dict[str, str], tmp_path: Path
) -> None:
    state = Path(agent_env["RUNBOOK_STATE_DIR"])
    # The socket and its token are the owner's alone, in the owner's directory.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "daemon.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "daemon.token").stat().st_mode) == 0o600

    handed = cli(agent_env, "run", "db-connection", "--dry-run")
    here = cli({**agent_env, "RUNBOOK_NO_DAEMON": "1"}, "run", "db-connection", "--dry-run")
    assert handed.returncode == here.returncode == 0, handed.stderr + here.stderr
    assert "Verdict: OK" in handed.stdout and plain(handed.stdout) == plain(here.stdout)
    (first, by_daemon), (second, by_command) = [(r[0], r[2]) for r in runs(state)]
    assert by_daemon == daemon.proc.pid and by_command != daemon.proc.pid
    # The same actor (the person at the terminal), and both runs in the one audit log.
    actors = {r[1] for r in runs(state)}
    assert len(actors) == 1 and "@" in actors.pop()
    audited = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    finished = {r["run_id"] for r in audited if r["event"] == "run_finished" and r["runbook"] == "db-connection"}
    assert finished == {first, second}

    # The command handed it over before loading its own machinery: the point of the socket is the cold start.
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent", "run", "db-connection", "--dry-run"],
        env=agent_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imports.returncode == 0 and runs(state)[-1][2] == daemon.proc.pid, imports.stderr[-2000:]
    loaded = {line.split("|")[-1].strip() for line in imports.stderr.splitlines() if line.startswith("import time:")}
    assert "agent.handoff" in loaded and not loaded & {"click", "pydantic", "yaml", "docker", "psycopg", "http.client"}

    # --nagios: the daemon's JSON document, rendered by the command as a plugin's output.
    nagios = cli(agent_env, "run", "db-connection", "--dry-run", "--nagios")
    assert nagios.returncode == 0 and runs(state)[-1][2] == daemon.proc.pid, nagios.stderr
    assert nagios.stdout.startswith("DB-CONNECTION OK - all 7 checks OK | ") and "pool_used_pct=" in nagios.stdout

    # --json: one document, the same shape as the command's own.
    as_json = cli(agent_env, "run", "db-connection", "--dry-run", "--json")
    document = json.loads(as_json.stdout)
    assert document["status"] == "OK" and document["incident"] is None and runs(state)[-1][2] == daemon.proc.pid


def test_the_daemon_declines_any_run_that_would_differ(
    daemon: Daemon, agent_env: dict[str, str], tmp_path: Path
) -> None:
    state = Path(agent_env["RUNBOOK_STATE_DIR"])

    def ran_here(env: dict[str, str], *args: str) -> bool:
        result = cli(env, "run", "db-connection", *args)
        assert result.returncode in (0, 1, 2), result.stderr
        return runs(state)[-1][2] != daemon.proc.pid

    assert not ran_here(agent_env, "--dry-run")
    assert ran_here({**agent_env, "RUNBOOK_NO_DAEMON": "1"}, "--dry-run")
    assert ran_here({**agent_env, "APP_URL": "http://127.0.0.1:1"}, "--dry-run")  # another environment
    assert ran_here({**agent_env, "PGSSLMODE": "disable"}, "--dry-run")  # libpq reads it beside the DSN
    state.chmod(0o750)  # a directory others may read: not a daemon to give secret params to
    assert ran_here(agent_env, "--dry-run")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # (the run here tightened it again)
    assert ran_here(agent_env)  # a live run is never given to a dry-run daemon
    other = tmp_path / "other-runbooks"
    shutil.copytree(REPO / "runbooks", other)
    assert ran_here({**agent_env, "RUNBOOK_DIR": str(other)}, "--dry-run")  # another directory
    runbook = Path(agent_env["RUNBOOK_DIR"]) / "db-connection.yaml"
    runbook.write_text(runbook.read_text().replace("timeout: 3s", "timeout: 2s"))
    assert ran_here(agent_env, "--dry-run")  # a runbook edited since the daemon loaded it
    # A bad param: the command's own message, from the command itself.
    bad = cli(agent_env, "run", "db-connection", "--dry-run", "-p", "nosuch=1")
    assert bad.returncode == 3 and "unknown param nosuch" in bad.stderr


def test_the_local_route_answers_only_on_the_socket_with_its_token(daemon: Daemon, agent_env: dict[str, str]) -> None:
    state = Path(agent_env["RUNBOOK_STATE_DIR"])
    body = {
        "runbook": "db-connection",
        "actor": "x",
        "runbooks": [],
        "env_names": [],
        "env_digest": "",
        "files_digest": "",
    }
    over_tcp = httpx.post(
        daemon.url + "/local/v1/run",
        json=body,
        headers={"Authorization": f"Bearer {(state / 'daemon.token').read_text().strip()}"},
    )
    assert over_tcp.status_code == 404
    transport = httpx.HTTPTransport(uds=str(state / "daemon.sock"))
    with httpx.Client(transport=transport, base_url="http://localhost") as local:
        assert local.post("/local/v1/run", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert local.post("/local/v1/run", json=body).status_code == 403
    assert not runs(state)


def test_a_socket_left_by_a_killed_daemon_is_not_used_and_is_replaced(
    agent_env: dict[str, str], tmp_path: Path
) -> None:
    state = Path(agent_env["RUNBOOK_STATE_DIR"])
    env = {**agent_env, "RUNBOOK_API_TOKEN": TOKEN}
    first = Daemon(env, REPO / "runbooks", "--dry-run").start()
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert (state / "daemon.sock").exists()  # left behind
    result = cli(agent_env, "run", "db-connection", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert runs(state)[-1][2] != first.proc.pid  # ran by the command itself, at once
    second = Daemon(env, REPO / "runbooks", "--dry-run").start()
    try:
        assert cli(agent_env, "run", "db-connection", "--dry-run").returncode == 0
        assert second.proc is not None and runs(state)[-1][2] == second.proc.pid
    finally:
        second.stop()
    assert not (state / "daemon.sock").exists()  # removed on a clean stop


def test_a_daemon_that_dies_mid_run_is_not_followed_by_a_second_run(agent_env: dict[str, str], tmp_path: Path) -> None:
    """The run was handed over: the command reports UNKNOWN and never runs it again itself."""
    runbooks = tmp_path / "slow"
    runbooks.mkdir()
    with socket.socket() as silent:  # accepts and never answers: the check waits out its timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        (runbooks / "slow.yaml").write_text(
            "id: slow\ntitle: Slow\nseverity: SEV-3\nchecks:\n"
            f"  - {{id: wait, check: http.get, with: {{url: 'http://127.0.0.1:{port}/'}}, timeout: 20s}}\n"
        )
        env = {**agent_env, "RUNBOOK_API_TOKEN": TOKEN, "RUNBOOK_DIR": str(runbooks)}
        daemon = Daemon(env, runbooks, "--dry-run").start()
        try:
            command = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "slow", "--dry-run"],
                env={**env},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            state = Path(agent_env["RUNBOOK_STATE_DIR"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                (state / "state.sqlite3").exists() and runs(state) and runs(state)[-1][3] == "running"
            ):
                time.sleep(0.1)
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)
            out, err = command.communicate(timeout=60)
        finally:
            daemon.stop()
    assert command.returncode == 3, (out, err)
    assert "did not answer" in err and "runbook runs" in err
    assert len(runs(state)) == 1  # the daemon's, never a second one


def _bounce_setup(agent_env: dict[str, str], tmp_path: Path, dc: Any) -> tuple[Any, dict[str, str], Path]:
    """A container of a compose project of its own, and a runbook whose manual remediation restarts it."""
    project = f"rbtest-{uuid.uuid4().hex[:8]}"  # the only project it may touch
    target = throwaway_container(
        ["sleep", "600"],
        name=f"{project}-ask-1",
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "ask"},
    ).get_wrapped_container()
    runbooks = tmp_path / "ask"
    runbooks.mkdir()
    (runbooks / "ask.yaml").write_text(
        "id: ask\ntitle: Ask first\nseverity: SEV-3\n"
        f"params:\n  target: {target.name}\n"
        "checks:\n  - {id: there, check: docker.container, with: {container: '{{ params.target }}'}}\n"
        "remediations:\n"
        "  - id: bounce\n    do: docker.restart\n    with: {container: '{{ params.target }}', wait_healthy: 30}\n"
        "    when: 'true'\n    approval: manual\n    verify: [there]\n"
    )
    env = {**agent_env, "RUNBOOK_API_TOKEN": TOKEN, "RUNBOOK_DIR": str(runbooks), "RUNBOOK_COMPOSE_PROJECT": project}
    return target, env, runbooks


def test_a_person_at_the_terminal_is_asked_mid_run_by_the_daemon(agent_env: dict[str, str], tmp_path: Path, dc) -> None:
    target, env, runbooks = _bounce_setup(agent_env, tmp_path, dc)
    daemon = Daemon(env, runbooks).start()  # live: it may change things, once a person says so
    state = Path(agent_env["RUNBOOK_STATE_DIR"])
    command = [sys.executable, "-m", "agent", "run", "ask"]

    def started() -> str:
        return str(dc.api.inspect_container(target.id)["State"]["StartedAt"])

    before = started()
    try:
        code, said = run_in_terminal(command, env, "n")
        assert "Approve bounce (docker.restart, plan " in said and f"restart container {target.name}" in said, said
        assert "rejected" in said and code == 0, said
        assert started() == before  # a no is a no
        assert runs(state)[-1][2] == daemon.proc.pid  # the daemon ran it, and asked here
        code, said = run_in_terminal(command, env, "y")
        assert "applied" in said and code == 0, said
        assert started() != before  # a yes, mid-run, applied by the daemon
        assert runs(state)[-1][2] == daemon.proc.pid
    finally:
        daemon.stop()
        target.remove(force=True)


def test_an_interrupted_command_stops_the_daemons_run_from_changing_anything(
    agent_env: dict[str, str], tmp_path: Path, dc
) -> None:
    """Ctrl-C while the plan waits for a y/N: as with a run in the command, nothing is applied."""
    import pty
    import select

    target, env, runbooks = _bounce_setup(agent_env, tmp_path, dc)
    daemon = Daemon(env, runbooks).start()
    state = Path(agent_env["RUNBOOK_STATE_DIR"])
    before = dc.api.inspect_container(target.id)["State"]["StartedAt"]
    leader, follower = pty.openpty()
    command = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "ask"],
        env=env,
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"Apply this plan? [y/N]" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        assert b"Apply this plan? [y/N]" in seen, seen
        deadline = time.monotonic() + 60
        pressed = 0.0
        while command.poll() is None and time.monotonic() < deadline:  # its last words read, never left blocked
            if time.monotonic() - pressed > 5:
                # Ctrl-C, and again if need be, as a person would: a SIGINT that lands between input()
                # writing its prompt and blocking on the terminal waits for the next key (CPython's race).
                command.send_signal(signal.SIGINT)
                pressed = time.monotonic()
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
        assert command.wait(30) == 3, seen  # UNKNOWN: the command cannot say how the run ended
        # The daemon's run ends without the change: left pending (nobody answered), never applied.
        assert faults.wait_for(lambda: runs(state)[-1][3] == "finished", timeout=30)
        with sqlite3.connect(state / "state.sqlite3") as db:
            (report,) = db.execute("SELECT report FROM runs WHERE run_id = ?", (runs(state)[-1][0],)).fetchone()
        (decision,) = json.loads(report)["remediations"]
        assert decision["decision"] in ("pending", "denied") and not decision["results"], decision
        assert dc.api.inspect_container(target.id)["State"]["StartedAt"] == before
        assert runs(state)[-1][2] == daemon.proc.pid
    finally:
        os.close(leader)
        if command.poll() is None:
            command.kill()
        daemon.stop()
        target.remove(force=True)
