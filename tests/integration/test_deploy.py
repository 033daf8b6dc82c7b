"""The shipped deployment: the container image is built here (nothing pulled) and its daemon answers an
alert against the sandbox; the systemd unit passes `systemd-analyze verify`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox import faults
from tests.integration.conftest import REPO
from tests.integration.harness import TOKEN, free_port

pytestmark = pytest.mark.integration
TAG = "runbook:integration-test"


def test_the_image_is_built_locally_and_its_daemon_runs_an_alerts_runbook(dc, agent_env: dict[str, str]) -> None:
    built = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "build_image.py"), "--tag", TAG],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    image = dc.images.get(TAG)
    labels = image.labels
    assert labels["org.opencontainers.image.title"] == "runbook"
    assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert image.attrs["Config"]["User"] == "runbook"

    port = free_port()
    env = {name: agent_env[name] for name in ("DATABASE_URL", "REDIS_URL", "APP_URL", "RUNBOOK_COMPOSE_PROJECT")}
    container = dc.containers.run(
        TAG,
        ["--host", "127.0.0.1", "--port", str(port), "--dry-run"],  # after the entrypoint's: these win
        detach=True,
        network_mode="host",  # the sandbox's published ports are on the host's 127.0.0.1
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],  # the socket's group, nothing more
        environment={**env, "RUNBOOK_API_TOKEN": TOKEN},
        labels={"io.runbook.test": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert faults.wait_for(ready, timeout=60), container.logs().decode()[-2000:]
        response = httpx.post(
            url + "/v1/alerts",
            json={"name": "AppDown", "labels": {"service": "app"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["results"][0]["run_id"]

        def finished() -> dict[str, object] | None:
            for line in container.logs(stdout=False, stderr=True).decode().splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    if event.get("event") == "run_finished" and event.get("run_id") == run_id:
                        return event
            return None

        assert faults.wait_for(lambda: finished() is not None, timeout=90), container.logs().decode()[-3000:]
        # OK: the docker checks reached the engine through the socket, as the image's own user.
        assert (finished() or {})["status"] == "OK", container.logs().decode()[-3000:]
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid != "0"
        modes = container.exec_run(["stat", "-c", "%a %U %n", "/var/lib/runbook", "/var/lib/runbook/audit.jsonl"])
        assert modes.output.decode().split("\n")[:2] == [
            "700 runbook /var/lib/runbook",
            "600 runbook /var/lib/runbook/audit.jsonl",
        ]
    finally:
        container.remove(force=True)
        dc.images.remove(TAG, force=True)


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit as shipped, in a root where its ExecStart exists; a unit
    with an unknown key in the same root is reported (the check can fail)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by sandbox/ensure-deps.sh"
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").symlink_to("/usr/lib/systemd")  # the system's own units
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shipped = (REPO / "deploy" / "runbook.service").read_text()
    (units / "runbook.service").write_text(shipped)
    (units / "broken.service").write_text(shipped.replace("[Service]\n", "[Service]\nRestartSecs=5\n"))
    executable = root / "opt" / "runbook" / ".venv" / "bin" / "runbook"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)

    def verify(unit: str) -> list[str]:
        result = subprocess.run(
            [analyze, "verify", f"--root={root}", "--man=no", f"/etc/systemd/system/{unit}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # Only what is said about the unit itself (the symlinked system units make noise of their own).
        said = [line for line in (result.stdout + result.stderr).splitlines() if unit in line]
        return said if result.returncode == 0 else [*said, f"exit {result.returncode}"]

    assert verify("runbook.service") == []
    assert any("RestartSecs" in line for line in verify("broken.service"))
