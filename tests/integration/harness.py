"""The daemon as a real process, and a real Alertmanager in front of it, for the integration tests."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sandbox import faults

REPO = Path(__file__).resolve().parents[2]

TOKEN = "example-token"  # the intake token, as in the reference deliveries
DECIDER = "alice-decision-token"  # alice's decision credential: reads runs, approves


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, env: dict[str, str], runbooks: Path, *extra: str, preexec: Any = None) -> None:
        self.env, self.runbooks, self.extra, self.preexec = env, runbooks, extra, preexec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        # What it prints (stdout and its log lines on stderr), in a file: a pipe nobody reads would fill
        # up and stop the daemon at its next log line.
        self.log_file = Path(tempfile.mkdtemp(prefix="runbook-daemon-")) / "output.log"
        # Alerts come with the intake token; reads and decisions with a person's credential.
        self.intake = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {DECIDER}"}, timeout=60)

    def start(self) -> Daemon:
        argv = [sys.executable, "-m", "agent", "daemon", "--port", str(self.port), "--runbooks", str(self.runbooks)]
        with open(self.log_file, "ab") as out:  # appended to, whoever else writes it
            self.proc = subprocess.Popen(
                [*argv, *self.extra],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=self.preexec,
            )
        assert faults.wait_for(self._up, timeout=30), self.output() if self.proc.poll() is not None else ""
        return self

    def output(self) -> str:
        """Everything it printed so far: its stdout and its log lines."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Its log lines (JSON: stderr is not a terminal here)."""
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def _up(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alert(self, name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        response = self.intake.post("/v1/alerts", json={"name": name, "labels": labels or {}, **extra})
        assert response.status_code == 202, response.text
        return response.json()["results"][0]

    def wait_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        holder: dict[str, Any] = {}

        def done() -> bool:
            holder["run"] = self.client.get(f"/v1/runs/{run_id}").json()
            return holder["run"]["status"] in ("finished", "interrupted")

        assert faults.wait_for(done, timeout=timeout), holder.get("run")
        return holder["run"]

    def runs(self) -> list[dict[str, Any]]:
        return self.client.get("/v1/runs", params={"limit": 1000}).json()


def write_runbooks(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "daemon-runbooks"
    directory.mkdir(exist_ok=True)
    (directory / "rb.yaml").write_text(textwrap.dedent(text))
    return directory


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Alertmanager:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def fire(self, *labels: str) -> None:
        """`amtool alert add`: the alert starts now, as Alertmanager records it."""
        subprocess.run(
            ["amtool", "alert", "add", *labels, f"--alertmanager.url={self.url}"], check=True, capture_output=True
        )


@contextmanager
def alertmanager(
    tmp_path: Path, daemon_url: str | list[str], token: str = TOKEN, port: int | None = None
) -> Iterator[Alertmanager]:
    """The real Alertmanager (Debian's package), delivering to the daemon quickly (to each daemon, given
    several: one receiver with a webhook per agent, as for agents that share state); on `port` if given
    (a daemon that silences alerts is told where it will be before it starts)."""
    port = port or free_port()
    config = tmp_path / "alertmanager.yml"
    webhooks = "".join(
        f"""
              - url: {url}/v1/alerts/alertmanager
                send_resolved: true
                http_config:
                  authorization:
                    credentials: {token}"""
        for url in ([daemon_url] if isinstance(daemon_url, str) else daemon_url)
    )
    config.write_text(
        textwrap.dedent(f"""
        route:
          receiver: runbook
          group_by: [alertname, service]
          group_wait: 1s
          group_interval: 2s
          repeat_interval: 1h
        receivers:
          - name: runbook
            webhook_configs:{webhooks}
        """)
    )
    am = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert faults.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), timeout=30)
        yield Alertmanager(port)
    finally:
        am.terminate()
        am.wait(10)
