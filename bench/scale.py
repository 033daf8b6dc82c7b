"""The scale figure of `make bench`: one runbook across 3 Docker engines and 200 containers.

This machine's engine and two more (their own dockerd each, reached over TCP with TLS, as in the tests),
a compose service spread over them, and a runbook whose check counts the service's running replicas on
every engine (`hosts: all`: one result per engine, concurrently). The warm time to a verdict (a dry run,
as the daemon makes it), for 1 and 3 engines and for few and many containers: how it grows with each.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

from sandbox import stack

RUNBOOK = """
id: scale
title: The web service on every engine
severity: SEV-2
checks:
  - id: web
    check: docker.replicas
    hosts: {hosts}
    timeout: 60s
    with: {{service: web, project: {project}, min: 1}}
"""
TOTAL = 200  # containers across the three engines, at the largest size


def _containers(client: docker.DockerClient, image: str, project: str, count: int, first: int) -> list[Any]:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "web"}
    made = []
    for number in range(first, first + count):
        labels_n = {**labels, "com.docker.compose.container-number": str(number)}
        made.append(
            client.containers.run(
                image,
                ["sleep", "3600"],
                name=f"{project}-web-{number}",
                network_mode="none",
                labels=labels_n,
                detach=True,
            )
        )
    return made


@contextlib.contextmanager
def _engines() -> Iterator[list[Any]]:
    from tests.integration.remote_engine import remote_engine

    with remote_engine(1) as one, remote_engine(2) as two:
        yield [one, two]


def _verdict_ms(settings: Any, hosts: str, project: str, rounds: int) -> tuple[float, str]:
    from agent.audit import AuditLog
    from agent.executor import Executor
    from agent.loader import load_runbooks
    from agent.redaction import Redactor

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "scale.yaml").write_text(RUNBOOK.format(hosts=hosts, project=project))
        runbooks = load_runbooks([Path(tmp)], template_env=[])
        redactor = Redactor()
        executor = Executor(runbooks, settings, redactor, AuditLog(Path(tmp) / "audit.jsonl", redactor), dry_run=True)
        times, summary = [], ""
        executor.run("scale", dry_run=True, actor="bench")  # warm: clients, negotiation, imports
        for _ in range(rounds):
            start = time.perf_counter()
            report = executor.run("scale", dry_run=True, actor="bench")
            times.append((time.perf_counter() - start) * 1000)
            summary = ", ".join(f"{c.id} {c.summary.split(' of ')[0]}" for c in report.checks)
        return statistics.median(times), summary


def scale(rounds: int) -> list[dict[str, Any]]:
    from agent.config import Settings
    from bench.run import row

    main = stack.client()
    project = f"rbbench-{uuid.uuid4().hex[:6]}"
    made: list[Any] = []
    rows: list[dict[str, Any]] = []
    state = Path(tempfile.mkdtemp(prefix="rbbench-"))  # the runs' state and audit: removed after
    try:
        with _engines() as extra:
            clients = [main, *(e.admin for e in extra)]
            images = [stack.IMAGE, *(["rbtest-busybox:latest"] * len(extra))]
            engines = {
                "local": {"docker_host": "unix:///var/run/docker.sock"},
                **{
                    f"remote-{i}": {"docker_host": e.host, "tls_verify": True, "cert_path": str(e.certs)}
                    for i, e in enumerate(extra, start=1)
                },
            }
            settings = Settings(state_dir=state, engines=engines, compose_project=project)
            per_engine = {"few": 10, "many": TOTAL // 3 + 1}
            made_so_far = [0, 0, 0]
            figures: dict[tuple[str, int], tuple[float, str]] = {}
            for size in ("few", "many"):
                for index, client in enumerate(clients):
                    want = per_engine[size] - made_so_far[index]
                    made += _containers(client, images[index], project, want, made_so_far[index] + 1)
                    made_so_far[index] += want
                for hosts in ("local", "all"):
                    figures[(size, 1 if hosts == "local" else 3)] = _verdict_ms(settings, hosts, project, rounds)
            base = figures[("few", 1)][0]
            for (size, count), (ms, summary) in figures.items():
                containers = per_engine[size] * count
                rows.append(
                    row(
                        f"scale: replicas on {count} engine{'s' * (count > 1)}, {containers} containers, warm",
                        ms,
                        "1 engine, 10 containers",
                        base,
                        seen=summary[:120],
                    )
                )
    finally:
        for container in made:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        main.close()
        shutil.rmtree(state, ignore_errors=True)
    return rows


if __name__ == "__main__":
    print(json.dumps(scale(3), indent=2))
