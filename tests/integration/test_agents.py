"""Several agents, one action: three daemons sharing their state on PostgreSQL, the real Alertmanager
delivering every alert to all of them. One run per incident, each change applied once; a daemon killed -9
in the middle of a change leaves its run interrupted (by one of the two survivors, once) and its lock
expiring, and the survivors neither repeat nor lose the change; `runbook status` shows every agent."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest

from sandbox import faults
from tests.integration.conftest import BOUNCE_RUNBOOK, STATE_PASSWORD, cli, starts, state_database
from tests.integration.harness import Daemon, alertmanager

pytestmark = pytest.mark.integration

SWEEP = """
id: sweep
title: Sweep
severity: SEV-4
schedule: {every: 4s}
params:
  target: TARGET
checks:
  - {id: there, check: docker.container, with: {container: '{{ params.target }}'}}
"""
SWEEP_EVERY = 4.0
LOCK_TTL = 30.0


def audit(env: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(env["RUNBOOK_STATE_DIR"]) / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(env: dict[str, str], run_id: str) -> list[str]:
    return [r["event"] for r in audit(env) if r.get("run_id") == run_id]


def test_three_agents_on_shared_state_act_once_and_survive_a_kill(
    daemon_env: dict[str, str], tmp_path: Path, target: tuple[str, str], state_server: str, dc: docker.DockerClient
) -> None:
    # The target's command (a bare `sleep`) ignores SIGTERM: a restart takes the engine's whole stop
    # timeout (10 s), time to kill the agent in the middle of it.
    project, container = target
    runbooks = tmp_path / "shared-runbooks"
    runbooks.mkdir()
    for name, alertname in (("once", "BounceOnce"), ("slow", "BounceKilled")):
        text = BOUNCE_RUNBOOK.format(name=name, approval="auto", alertname=alertname, target=container)
        (runbooks / f"{name}.yaml").write_text(text)
    # A scheduled sweep: once per period between the agents, not once each.
    (runbooks / "sweep.yaml").write_text(SWEEP.replace("TARGET", container))
    state_url = state_database(state_server, "agents")
    envs = [
        {
            **daemon_env,
            "RUNBOOK_COMPOSE_PROJECT": project,
            "RUNBOOK_STATE_URL": state_url,
            "RUNBOOK_STATE_DIR": str(tmp_path / f"agent-{n}"),  # each agent's own audit chain
            "RUNBOOK_AGENT_DEAD_AFTER": "6s",  # a heartbeat a second: a busy machine never misses six
            "RUNBOOK_LOCK_TTL": f"{LOCK_TTL:g}s",
        }
        for n in (1, 2, 3)
    ]
    agents = [Daemon(env, runbooks).start() for env in envs]
    began = time.time()
    try:
        with alertmanager(tmp_path, [d.url for d in agents]) as am:
            # 1. Every agent gets the alert: one run, one restart.
            since = time.time()
            am.fire("alertname=BounceOnce", "service=bounce", "severity=warning")

            def runs_of(runbook: str) -> list[dict[str, Any]]:
                return [r for r in agents[0].runs() if r["runbook"] == runbook and r["created"] >= since]

            def delivered_to_all(alertname: str) -> bool:
                return all(
                    any(r["event"] == "alerts_received" and alertname in json.dumps(r) for r in audit(env))
                    for env in envs
                )

            assert faults.wait_for(lambda: bool(runs_of("bounce-once")) and delivered_to_all("BounceOnce"), 60)
            (run,) = runs_of("bounce-once")
            run = agents[1].wait_run(run["run_id"])  # either agent answers for any run: the state is shared
            assert run["report"]["remediations"][0]["outcome"] == "resolved", run["report"]
            applied = [env for env in envs if "apply_started" in events(env, run["run_id"])]
            assert len(applied) == 1 and events(applied[0], run["run_id"]).count("apply_started") == 1
            assert starts(dc, container, since) == 1
            assert len(runs_of("bounce-once")) == 1  # the others' copies were deduplicated, not more runs

            # 2. The agent applying a change is killed -9 in the middle of it.
            since = time.time()
            am.fire("alertname=BounceKilled", "service=bounce", "severity=warning")
            assert faults.wait_for(lambda: bool(runs_of("bounce-slow")), timeout=60)
            (run,) = runs_of("bounce-slow")
            run_id = run["run_id"]
            assert faults.wait_for(lambda: any("apply_started" in events(env, run_id) for env in envs), 60)
            victim = next(i for i, env in enumerate(envs) if "apply_started" in events(env, run_id))
            survivors = [i for i in range(len(agents)) if i != victim]
            proc = agents[victim].proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert "apply_finished" not in events(envs[victim], run_id)  # killed mid-apply indeed

            # The survivors see its heartbeat stop; one of them interrupts its run, once.
            run = agents[survivors[0]].wait_run(run_id, timeout=60)
            assert run["status"] == "interrupted"
            time.sleep(2)  # both survivors have swept since
            interrupted = [
                r
                for i in survivors
                for r in audit(envs[i])
                if r.get("run_id") == run_id and r["event"] == "run_interrupted"
            ]
            assert len(interrupted) == 1 and "stopped its heartbeat" in interrupted[0]["reason"], interrupted

            # `runbook status` shows every agent: the killed one lost, still holding the target's lock
            # until it expires; the survivors alive.
            shown = cli(envs[survivors[0]], "status", "--json")
            assert shown.returncode == 0, shown.stderr
            status = json.loads(shown.stdout)
            states = {a["pid"]: a["state"] for a in status["agents"]}
            assert states == {
                proc.pid: "lost",
                **{agents[i].proc.pid: "alive" for i in survivors},  # type: ignore[union-attr]
            }, status["agents"]
            (lost,) = [a for a in status["agents"] if a["state"] == "lost"]
            held = [lock["target"] for lock in status["locks"]]
            assert held and lost["locks"] == held and lost["version"]  # its lock outlives it, until it expires
            survivor = agents[survivors[0]]

            # Nothing repeats it: the alert again, through the survivor, joins the interrupted run.
            again = survivor.alert("BounceKilled", {"service": "bounce"})
            assert again["outcome"] == "deduplicated" and again["run_id"] == run_id
            # ...and nothing loses it: the change that started stays recorded and counts against the
            # target's limits; the dead agent's audit chain holds its apply_started.
            with psycopg.connect(state_url) as db:
                outcomes = db.execute("SELECT outcome FROM runbook.actions WHERE run_id = %s", (run_id,)).fetchall()
            assert outcomes == [("started",)]
            assert faults.wait_for(
                lambda: not json.loads(cli(envs[survivors[1]], "status", "--json").stdout)["locks"], LOCK_TTL + 15
            )
            assert starts(dc, container, since) == 1  # the engine finished the restart the agent began
            verified = cli(envs[victim], "audit", "verify")
            assert verified.returncode == 0, verified.stdout + verified.stderr

            # The sweep ran about once per period in all, however many agents keep the clock.
            sweeps = [r for r in agents[survivors[0]].runs() if r["runbook"] == "sweep"]
            periods = (time.time() - began) / (0.9 * SWEEP_EVERY)
            assert 2 <= len(sweeps) <= periods + 2, (len(sweeps), periods)
        # The shared state's password is nowhere in what the agents wrote.
        for env, d in zip(envs, agents, strict=True):
            written = (Path(env["RUNBOOK_STATE_DIR"]) / "audit.jsonl").read_text() + d.output()
            assert STATE_PASSWORD not in written
    finally:
        for d in agents:
            d.stop()
