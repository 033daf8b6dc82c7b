"""Several engines in one agent, with fake plugins: checks fan out (`health@web-2`), a remediation is
planned on every engine first (one plan, one approval), then rolled out one engine at a time, verified
between steps, and stopped at the first failure; limits and the blast radius count across engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agent.audit import AuditLog, read_records
from agent.changes import Change, EffectSpec
from agent.config import Settings
from agent.executor import Executor
from agent.loader import LoadedRunbook, RunbookSet
from agent.plugins import EffectSet, Outcome, PluginSet
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.status import Status
from agent.templating import Templates
from tests.state_backend import open_state

plugins = PluginSet("fleet")
effects = EffectSet("fleet")
ENGINES = {
    "web-1": {"docker_host": "unix:///run/rbtest-web-1.sock", "labels": {"role": "web"}},
    "web-2": {"docker_host": "unix:///run/rbtest-web-2.sock", "labels": {"role": "web"}},
    "web-3": {"docker_host": "unix:///run/rbtest-web-3.sock", "labels": {"role": "web"}},
}
HEALTH: dict[str, str] = {}  # engine -> what its health check says
APPLIED: list[str] = []  # the engines the effect ran on, in order (read from the clients it was given)
BROKEN: set[str] = set()  # engines where the effect fails
NO_HEAL: set[str] = set()  # engines the effect runs on without healing them
DURING: list[Any] = []  # called as the effect runs


class HostParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str


class FixSpec(EffectSpec):
    host: str


@plugins.check("fleet.health", HostParams)
def health(ctx: Any, p: HostParams) -> Outcome:
    # The check's clients are its engine's: the host template and the engine it reaches agree.
    assert ctx.settings.docker_host == ENGINES[p.host]["docker_host"]
    if HEALTH.get(p.host) == "GONE":
        return Outcome(Status.CRITICAL, f"{p.host} unreachable", code="docker_unreachable")
    return Outcome(Status(HEALTH.get(p.host, "OK")), f"{p.host} is {HEALTH.get(p.host, 'OK')}")


@plugins.remediation("fleet.fix", HostParams, effects={"fleet.fix": FixSpec})
def fix(ctx: Any, p: HostParams) -> list[Change]:
    assert ctx.settings.docker_host == ENGINES[p.host]["docker_host"]
    return [Change("fleet.fix", "thing:app", f"fix app on {p.host}", "broken", "fixed", FixSpec(host=p.host))]


@effects.effect("fleet.fix", FixSpec)
def apply_fix(ctx: Any, spec: FixSpec) -> dict[str, Any]:
    host = next(name for name, e in ENGINES.items() if e["docker_host"] == ctx.settings.docker_host)
    assert host == spec.host  # applied through the clients of the engine it was planned on
    APPLIED.append(host)
    for call in DURING:
        call()
    if host in BROKEN:
        raise RuntimeError(f"{host} refused")
    if host not in NO_HEAL:
        HEALTH[host] = "OK"
    return {"fixed": host}


@pytest.fixture(autouse=True)
def reset() -> None:
    HEALTH.clear()
    APPLIED.clear()
    BROKEN.clear()
    NO_HEAL.clear()
    DURING.clear()


def run(
    tmp_path: Path,
    remediation: dict[str, Any] | None = None,
    *,
    hosts: Any = "all",
    stop: Any = None,
    **settings: Any,
) -> tuple[Any, Path]:
    registry = Registry(check_modules={}, remediation_modules={})
    registry.add_plugins(plugins)
    spec = Runbook.model_validate(
        {
            "id": "fleet",
            "title": "Fleet",
            "severity": "SEV-2",
            "params": {"only": {"default": "web-2"}},
            "checks": [{"id": "health", "check": "fleet.health", "hosts": hosts, "with": {"host": "{{ host.name }}"}}],
            "remediations": [
                {
                    "id": "fix",
                    "do": "fleet.fix",
                    "approval": "auto",
                    "cooldown": "0s",
                    "hosts": "failing:health",
                    "with": {"host": "{{ host.name }}"},
                    "verify": ["health"],
                    "verify_timeout": "1s",
                    **(remediation or {}),
                }
            ],
        }
    )
    runbooks = RunbookSet({"fleet": LoadedRunbook(spec, Path("fleet.yaml"))}, Templates(), registry)
    audit_path = tmp_path / "audit.jsonl"
    executor = Executor(
        runbooks,
        Settings(state_dir=tmp_path, engines=ENGINES, **settings),
        Redactor(),
        AuditLog(audit_path, Redactor()),
        state=open_state(tmp_path),
        effect_modules={"fleet": __name__},
    )
    LAST["executor"] = executor
    return executor.run("fleet", actor="tester", stop=stop), audit_path


LAST: dict[str, Any] = {}


def test_a_check_fans_out_one_result_per_engine(tmp_path: Path) -> None:
    HEALTH.update({"web-2": "CRITICAL"})
    report, _ = run(tmp_path, {"approval": "manual"})
    assert [(c.id, c.status.value) for c in report.checks] == [
        ("health@web-1", "OK"),
        ("health@web-2", "CRITICAL"),
        ("health@web-3", "OK"),
    ]
    assert report.status is Status.CRITICAL
    # The plan is for the failing engine only, its target carrying the engine, bound by one fingerprint.
    (change,) = report.remediations[0].plan["changes"]
    assert (change["target"], change["host"], report.remediations[0].decision) == (
        "thing:app@web-2",
        "web-2",
        "pending",
    )


@pytest.mark.parametrize(
    ("hosts", "ids"),
    [
        ("role=web", ["health@web-1", "health@web-2", "health@web-3"]),
        (["web-3", "web-1"], ["health@web-1", "health@web-3"]),
        ("{{ params.only }}", ["health@web-2"]),
    ],
)
def test_hosts_select_by_name_label_and_param(tmp_path: Path, hosts: Any, ids: list[str]) -> None:
    report, _ = run(tmp_path, hosts=hosts)
    assert [c.id for c in report.checks] == ids


def test_an_unknown_engine_is_an_unknown_result_not_a_crash(tmp_path: Path) -> None:
    report, _ = run(tmp_path, hosts="web-9")
    (result,) = report.checks
    assert (result.id, result.status, result.code) == ("health", Status.UNKNOWN, "bad_hosts")
    assert "no engine named 'web-9'" in result.summary


def test_a_rollout_goes_one_engine_at_a_time_verifying_each(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-3": "CRITICAL"})
    report, audit = run(tmp_path)
    decision = report.remediations[0]
    assert (decision.outcome, APPLIED) == ("resolved", ["web-1", "web-3"])
    records = read_records(audit)
    steps = [r for r in records if r["event"] == "rollout_step"]
    assert [(s["hosts"], s["failed"]) for s in steps] == [(["web-1"], []), (["web-3"], [])]
    # Each step verified its own engine before the next engine was touched.
    assert [c["id"] for c in steps[0]["verify"]] == ["health@web-1"]
    assert report.final_status is Status.OK


def test_a_rollout_stops_at_the_first_engine_that_fails(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL", "web-3": "CRITICAL"})
    BROKEN.add("web-1")
    report, _ = run(tmp_path)
    decision = report.remediations[0]
    assert (decision.outcome, APPLIED) == ("apply_failed", ["web-1"])  # web-2 and web-3 untouched
    assert [r["outcome"] for r in decision.results] == ["failed", "not_applied", "not_applied"]
    assert "failed on web-1" in (decision.escalation or "") and "not changed: web-2, web-3" in (
        decision.escalation or ""
    )


def test_a_change_that_does_not_verify_stops_the_rollout_too(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL"})
    NO_HEAL.add("web-1")
    report, _ = run(tmp_path)
    decision = report.remediations[0]
    assert (decision.outcome, APPLIED) == ("not_resolved", ["web-1"])
    # Its target's circuit is open: the next run does not try web-1 again at once.
    state = open_state(tmp_path)
    assert [b.target for b in state.breakers()] == ["thing:app@web-1"]


def test_max_errors_and_batches(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL", "web-3": "CRITICAL"})
    BROKEN.add("web-1")
    report, audit = run(tmp_path, {"rollout": {"batch": 2, "max_errors": 1}})
    assert APPLIED == ["web-1", "web-2", "web-3"]  # one failure allowed: the rollout went on
    steps = [r for r in read_records(audit) if r["event"] == "rollout_step"]
    assert [(s["hosts"], s["failed"]) for s in steps] == [(["web-1", "web-2"], ["web-1"]), (["web-3"], [])]
    assert report.remediations[0].outcome == "apply_failed"


def test_the_blast_radius_counts_across_engines(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL"})
    report, _ = run(tmp_path, max_targets_per_run=1)
    decision = report.remediations[0]
    assert decision.decision == "denied" and "blast radius: would change 2 targets" in decision.decision_reason
    assert APPLIED == []


def test_an_engine_that_cannot_be_reached_is_no_finding_to_fix(tmp_path: Path) -> None:
    """failing: picks the engines where the check found the fault, not one it could not reach: a plan
    there could not be made and would hold up the fix everywhere else."""
    HEALTH.update({"web-2": "CRITICAL", "web-3": "GONE"})
    report, _ = run(tmp_path)
    assert (report.remediations[0].outcome, APPLIED) == ("resolved", ["web-2"])


def test_a_stopping_agent_starts_no_further_engine(tmp_path: Path) -> None:
    import threading

    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL"})
    stop = threading.Event()
    DURING.append(stop.set)  # the daemon is told to stop while the first engine is changed
    report, _ = run(tmp_path, stop=stop)
    decision = report.remediations[0]
    assert APPLIED == ["web-1"] and [r["outcome"] for r in decision.results] == ["ok", "not_applied"]
    assert "the agent is stopping" in (decision.escalation or "") and "not changed: web-2" in decision.escalation


def test_a_verification_that_checks_nothing_on_an_engine_does_not_pass_it(tmp_path: Path) -> None:
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL"})
    # The check runs on web-1 only: a fix of web-2 cannot be verified by it.
    report, _ = run(tmp_path, {"hosts": ["web-2"], "verify_timeout": "1s"}, hosts="web-1")
    decision = report.remediations[0]
    assert APPLIED == ["web-2"] and decision.outcome == "not_resolved"


def test_the_default_engine_by_name_is_the_same_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inventory entry for the default engine names its targets as a step without hosts does: the
    same container meets the same locks and limits by either name."""
    HEALTH.update({"web-1": "CRITICAL"})
    monkeypatch.setitem(ENGINES, "web-1", {**ENGINES["web-1"], "docker_host": "unix:///var/run/docker.sock"})
    report, _ = run(tmp_path, {"approval": "manual"})
    (change,) = report.remediations[0].plan["changes"]
    assert (change["target"], change["host"], change["summary"]) == ("thing:app", "web-1", "web-1: fix app on web-1")


@pytest.mark.parametrize(
    ("engines", "why"),
    [
        ({"a": {"docker_host": "unix:///x.sock"}, "b": {"docker_host": "unix:///x.sock/"}}, "the same engine as"),
        ({"a": {"docker_host": "npipe:////./pipe/docker_engine"}}, r"unix://, tcp:// or ssh://"),
        ({"a": {"docker_host": "ssh://me@-oProxyCommand=x"}}, r"engines\.a: 'ssh://me@-oProxyCommand=x' is not ssh://"),
        ({"a": {"docker_host": "ssh://me@h"}, "b": {"docker_host": "ssh://me@h/"}}, "the same engine as"),
        ({"all": {"docker_host": "unix:///x.sock"}}, "may not be named `all`"),
    ],
)
def test_an_inventory_names_each_engine_once_and_only_what_it_can_reach(engines: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Settings(engines=engines)


def test_an_approval_whose_plan_is_now_empty_is_a_changed_plan(tmp_path: Path) -> None:
    """Approved from a report that is not there (the run's report not yet written, or lost): failing:
    selects nothing now. That is a changed plan for the person to look at, never a silent `nothing to
    do` that uses up their approval."""
    from agent.exceptions import PlanChanged

    HEALTH.update({"web-2": "CRITICAL"})
    report, _ = run(tmp_path, {"approval": "manual"})
    executor = LAST["executor"]
    pending = report.remediations[0]
    assert pending.decision == "pending"
    with executor.state.write() as db:
        db.execute("UPDATE runs SET report = NULL WHERE run_id = ?", (report.run_id,))
    with pytest.raises(PlanChanged, match="now nothing to do"):
        executor.decide_pending(report.run_id, approve=True, approver="alice", fingerprint=pending.plan["fingerprint"])
    assert [p[1] for p in executor.state.pending(report.run_id)] == ["fix"]  # still waiting for a person
    assert APPLIED == []


def test_an_audit_log_that_breaks_mid_rollout_stops_it(tmp_path: Path) -> None:
    # The log becomes unwritable while the first engine is changed (a full disk): its step cannot be
    # recorded, so no further engine is touched, as none would be if apply_started had failed.
    HEALTH.update({"web-1": "CRITICAL", "web-2": "CRITICAL"})
    audit_path = tmp_path / "audit.jsonl"

    def break_the_log() -> None:
        audit_path.unlink()
        audit_path.mkdir()

    DURING.append(break_the_log)
    report, _ = run(tmp_path)
    decision = report.remediations[0]
    assert APPLIED == ["web-1"] and [r["outcome"] for r in decision.results] == ["ok", "not_applied"]
    assert "the audit log cannot be written" in (decision.escalation or "")
