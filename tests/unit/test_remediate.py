"""The safety model with fake plugins: dry-run, policy, pause, approvals, limits, locks, verify, fail closed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agent.audit import AuditLog, read_records
from agent.changes import Change
from agent.config import Settings
from agent.exceptions import Conflict
from agent.executor import Executor
from agent.loader import LoadedRunbook, RunbookSet
from agent.plugins import Outcome, PluginSet
from agent.policy import EnvironmentPolicy
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.status import Status
from agent.templating import Templates
from tests.state_backend import open_state
from tests.unit import fake_effects
from tests.unit.fake_effects import FixSpec, OtherSpec

plugins = PluginSet("fake")
HEALTH = fake_effects.HEALTH


class CheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@plugins.check("fake.health", CheckParams)
def health(ctx: Any, p: CheckParams) -> Outcome:
    return Outcome(Status(HEALTH["value"]), f"health {HEALTH['value']}")


class FixParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[str] = ["thing:a"]
    fail: bool = False
    heals: bool = False
    sleep: float = 0.0
    effect: str = "fake.thing.fix"
    wrong_spec: bool = False


@plugins.remediation("fake.fix", FixParams, effects={"fake.thing.fix": FixSpec})
def fix(ctx: Any, p: FixParams) -> list[Change]:
    def spec(target: str) -> Any:
        return OtherSpec() if p.wrong_spec else FixSpec(target=target, fail=p.fail, heals=p.heals, sleep=p.sleep)

    return [Change(p.effect, t, f"fix {t}", "broken", "fixed", spec(t)) for t in p.targets]


@plugins.remediation("fake.restore", FixParams, effects={"fake.thing.fix": FixSpec}, manual_only=True)
def restore(ctx: Any, p: FixParams) -> list[Change]:
    return [Change(p.effect, t, f"restore {t}", None, None, FixSpec(target=t)) for t in p.targets]


@pytest.fixture(autouse=True)
def reset() -> None:
    HEALTH["value"] = "CRITICAL"
    fake_effects.applied.clear()


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.state = open_state(tmp_path)
        self.audit_path = tmp_path / "audit.jsonl"
        self.settings = Settings(state_dir=tmp_path, default_cooldown=0)

    def executor(
        self,
        remediation: dict[str, Any] | None = None,
        *,
        policy: EnvironmentPolicy | None = None,
        settings: Settings | None = None,
        audit_path: Path | None = None,
        dry_run: bool = False,
        params: dict[str, Any] | None = None,
    ) -> Executor:
        registry = Registry(check_modules={}, remediation_modules={})
        registry.add_plugins(plugins)
        spec = Runbook.model_validate(
            {
                "id": "t",
                "title": "T",
                "severity": "SEV-2",
                "params": params or {},
                "checks": [{"id": "health", "check": "fake.health"}],
                "remediations": [{"id": "fix", "do": "fake.fix", "approval": "auto", **(remediation or {})}],
            }
        )
        runbooks = RunbookSet({"t": LoadedRunbook(spec, Path("t.yaml"))}, Templates(), registry)
        redactor = Redactor()
        return Executor(
            runbooks,
            settings or self.settings,
            redactor,
            AuditLog(audit_path or self.audit_path, redactor),
            policy=policy,
            state=self.state,
            effect_modules={"fake": "tests.unit.fake_effects"},
            dry_run=dry_run,
        )

    def run(
        self,
        remediation: dict[str, Any],
        *,
        dry_run: bool = False,
        policy: EnvironmentPolicy | None = None,
        approve: Any = None,
        settings: Settings | None = None,
        audit_path: Path | None = None,
    ) -> Any:
        executor = self.executor(remediation, policy=policy, settings=settings, audit_path=audit_path)
        report = executor.run("t", actor="tester@host", dry_run=dry_run, approve=approve)
        return report, report.remediations[0]


def heal_on_apply() -> None:
    HEALTH["value"] = "OK"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_dry_run_plans_and_never_builds_an_applier(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_applier(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an applier was built in dry-run")

    monkeypatch.setattr("agent.executor.Applier", no_applier)
    _, rem = h.run({}, dry_run=True)
    assert (rem.decision, rem.applied) == ("planned_only", False)
    assert rem.plan["changes"][0]["target"] == "thing:a"
    assert fake_effects.applied == []
    assert h.state.runs_on_target("thing:a", 0) == []
    events = [r["event"] for r in read_records(h.audit_path)]
    assert "remediation_planned" in events and "apply_started" not in events


def test_auto_remediation_applies_and_is_audited(h: Harness) -> None:
    report, rem = h.run({})
    assert (rem.decision, rem.applied, rem.outcome, rem.approver) == ("applied", True, "applied", "auto (runbook)")
    assert fake_effects.applied == ["thing:a"]
    events = [r["event"] for r in read_records(h.audit_path)]
    assert events.index("approval") < events.index("apply_started") < events.index("apply_finished")
    assert report.final_status is Status.CRITICAL  # the fake fix does not heal: the final sweep says so


def test_policy_plan_only_and_deny(h: Harness) -> None:
    _, rem = h.run({}, policy=EnvironmentPolicy(name="staging", mode="plan"))
    assert rem.decision == "planned_only" and "staging: plan only" in rem.decision_reason
    _, rem = h.run({}, policy=EnvironmentPolicy(name="prod", deny=["fake.fix"]))
    assert rem.decision == "denied" and fake_effects.applied == []


def test_policy_can_only_tighten_approval(h: Harness) -> None:
    policy = EnvironmentPolicy(name="prod", auto=["t.other"])
    _, rem = h.run({}, policy=policy)
    assert rem.decision == "pending"  # auto in the runbook, but not allowed unattended here
    _, rem = h.run({"approval": "manual"}, policy=EnvironmentPolicy(name="prod", auto=["t.fix"]))
    assert rem.decision == "pending"  # a policy never loosens manual to auto


def test_manual_approval_pending_rejected_approved(h: Harness) -> None:
    _, rem = h.run({"approval": "manual"})
    assert rem.decision == "pending" and fake_effects.applied == []
    assert h.state.pending()[0][1] == "fix"
    _, rem = h.run({"approval": "manual"}, approve=lambda step, plan: False)
    assert rem.decision == "rejected" and fake_effects.applied == []
    seen = []
    _, rem = h.run({"approval": "manual"}, approve=lambda step, plan: seen.append(plan.fingerprint) or True)
    assert (rem.decision, rem.approver) == ("applied", "tester@host") and seen == [rem.plan["fingerprint"]]


def test_manual_only_remediation_is_never_automatic(h: Harness) -> None:
    _, rem = h.run({"do": "fake.restore"})
    assert rem.decision == "pending"


def test_pause_denies_everything(h: Harness) -> None:
    h.state.set_paused(True, "oncall@host", "maintenance")
    _, rem = h.run({})
    assert rem.decision == "denied" and "paused by oncall@host: maintenance" in rem.decision_reason
    h.state.set_paused(False, "oncall@host")
    _, rem = h.run({})
    assert rem.decision == "applied"


def test_rate_limit_then_escalation(h: Harness) -> None:
    for _ in range(2):
        _, rem = h.run({"limit": {"max": 2, "per": "1h"}})
        assert rem.decision == "applied"
    _, rem = h.run({"limit": {"max": 2, "per": "1h"}})
    assert rem.decision == "denied" and rem.decision_reason.startswith("limit reached")
    assert rem.escalation and fake_effects.applied == ["thing:a", "thing:a"]
    assert "escalation" in [r["event"] for r in read_records(h.audit_path)]


def test_cooldown(h: Harness) -> None:
    settings = Settings(state_dir=h.tmp_path, default_cooldown=600)
    assert h.run({}, settings=settings)[1].decision == "applied"
    _, rem = h.run({}, settings=settings)
    assert rem.decision == "denied" and rem.decision_reason.startswith("cooldown")
    assert h.run({"cooldown": "0s"}, settings=settings)[1].decision == "applied"


def test_lock_held_by_another_run(h: Harness) -> None:
    assert h.state.lock(["thing:a"], "other-run", ttl=60) is None
    _, rem = h.run({})
    assert rem.decision == "denied" and "locked by run other-run" in rem.decision_reason
    h.state.unlock(["thing:a"], "other-run")
    assert h.run({})[1].decision == "applied"


def test_blast_radius(h: Harness) -> None:
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, max_targets_per_run=2)
    _, rem = h.run({"with": {"targets": ["thing:a", "thing:b", "thing:c"]}}, settings=settings)
    assert rem.decision == "denied" and rem.decision_reason.startswith("blast radius")


def test_not_resolved_opens_the_breaker_until_reset(h: Harness) -> None:
    _, rem = h.run({"verify": ["health"], "verify_timeout": "1s"})
    assert (rem.outcome, bool(rem.escalation)) == ("not_resolved", True)
    _, rem = h.run({"verify": ["health"], "verify_timeout": "1s"})
    assert rem.decision == "denied" and rem.decision_reason.startswith("circuit open on thing:a")
    assert fake_effects.applied == ["thing:a"]
    assert h.state.reset_breaker("thing:a")
    HEALTH["value"] = "CRITICAL"
    _, rem = h.run({"verify": ["health"], "verify_timeout": "1s"})
    assert rem.decision == "applied"


def test_resolved_when_verify_passes(h: Harness) -> None:
    report, rem = h.run({"with": {"heals": True}, "verify": ["health"], "verify_timeout": "5s"})
    assert rem.outcome == "resolved" and rem.verify == [{"id": "health", "status": "OK", "summary": "health OK"}]
    assert report.final_status is Status.OK and report.exit_status is Status.OK


def test_failed_effect_escalates(h: Harness) -> None:
    _, rem = h.run({"with": {"fail": True}})
    assert (rem.outcome, rem.results[0]["outcome"]) == ("apply_failed", "failed")
    assert "effect failed" in rem.escalation


def test_undeclared_effect_is_a_plan_failure(h: Harness) -> None:
    _, rem = h.run({"with": {"effect": "fake.thing.destroy"}})
    assert rem.decision == "plan_failed" and "undeclared effects" in rem.decision_reason
    assert fake_effects.applied == []


def test_audit_unavailable_means_nothing_is_applied(h: Harness) -> None:
    blocker = h.tmp_path / "not-a-dir"
    blocker.write_text("")
    report, rem = h.run({}, audit_path=blocker / "audit.jsonl")
    assert rem.decision == "denied" and "audit log unavailable" in rem.decision_reason
    assert fake_effects.applied == [] and report.audit_error


def test_a_remediation_must_declare_effects() -> None:
    with pytest.raises(ValueError, match="declares no effects"):
        PluginSet("x").remediation("x.y", FixParams, effects={})(lambda ctx, p: [])


def test_a_plan_handing_an_effect_the_wrong_payload_fails_in_a_dry_run(h: Harness) -> None:
    _, rem = h.run({"with": {"wrong_spec": True}}, dry_run=True)
    assert rem.decision == "plan_failed" and "takes FixSpec, the plan gave OtherSpec" in rem.decision_reason


def test_the_guards_run_in_their_declared_order(h: Harness) -> None:
    # Paused and locked by another run at once: the pause, earlier in the list, is the reason given.
    h.state.set_paused(True, "oncall@host", "freeze")
    assert h.state.lock(["thing:a"], "other-run", ttl=60) is None
    _, rem = h.run({})
    assert rem.decision == "denied" and "paused" in rem.decision_reason


def test_a_long_apply_keeps_its_lock_and_its_action_counts_while_it_runs(h: Harness) -> None:
    # An apply that outlives the lock's TTL: the lock is renewed, so another run cannot take the target,
    # and the change is recorded when it starts, so limits see it in flight.
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, lock_ttl=0.3)
    seen: list[Any] = []

    def look() -> None:
        time.sleep(1.0)  # over three TTLs into the apply
        other = open_state(h.tmp_path)
        seen.append((other.lock(["thing:a"], "intruder", ttl=60), other.runs_on_target("thing:a", 0)))

    fake_effects.DURING.append(look)
    try:
        _, rem = h.run({"with": {"sleep": 0.2}}, settings=settings)
    finally:
        fake_effects.DURING.clear()
    held, in_flight = seen[0]
    assert held is not None and "is locked by run" in held
    assert len(in_flight) == 1
    assert rem.decision == "applied"
    assert [a[2] for a in h.state.actions("thing:a")] == ["ok"]


def test_a_dry_run_process_never_builds_an_applier_even_to_approve(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.run({"approval": "manual"})  # a live run leaves a pending approval
    run_id = h.state.pending()[0][0]

    def no_applier(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an applier was built in a dry-run process")

    monkeypatch.setattr("agent.executor.Applier", no_applier)
    executor = h.executor(dry_run=True)
    with pytest.raises(Conflict, match="dry-run mode"):
        executor.decide_pending(run_id, approve=True, approver="api:alice")
    assert fake_effects.applied == [] and h.state.pending()  # still waiting for a live agent
    assert not any(r.get("mode") == "live" and r["event"] == "apply_started" for r in read_records(h.audit_path))


def test_a_dry_run_is_never_approved(h: Harness) -> None:
    h.state.add_run(run_id="dry1", runbook="t", target="-", mode="dry-run", actor="x", params={})
    h.state.add_pending("dry1", "fix", "f" * 16, {})
    with pytest.raises(Conflict, match="dry-run run"):
        h.executor().decide_pending("dry1", approve=True, approver="alice")
    assert fake_effects.applied == []


def test_secret_overrides_are_never_stored_and_must_be_given_again(h: Harness) -> None:
    executor = h.executor({"approval": "manual"}, params={"token": {"default": "dflt", "secret": True}, "where": "x"})
    executor.run(
        "t", actor="t@h", overrides={"token": "s3cret-override-value", "where": "y"}, approve=lambda s, p: None
    )
    (run,) = h.state.runs()
    assert run["params"] == {"where": "y"} and run["secret_params"] == ["token"]
    for stored in h.tmp_path.glob("state.sqlite3*"):  # the database and its WAL, where new writes sit
        assert b"s3cret-override-value" not in stored.read_bytes(), stored
    with pytest.raises(Conflict, match="secret param"):
        executor.decide_pending(run["run_id"], approve=True, approver="alice")
    decision = executor.decide_pending(
        run["run_id"], approve=True, approver="alice", secret_params={"token": "s3cret-override-value"}
    )
    assert decision.decision == "applied"


def test_a_lock_lost_mid_apply_stops_before_the_next_change(h: Harness) -> None:
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, lock_ttl=0.3)

    def steal() -> None:
        if fake_effects.applied == ["thing:a"]:
            thief = open_state(h.tmp_path)
            with thief._write() as db:
                db.execute("UPDATE locks SET run_id = 'thief' WHERE target = 'thing:b'")

    fake_effects.DURING.append(steal)
    try:
        _, rem = h.run({"with": {"targets": ["thing:a", "thing:b"], "sleep": 0.5}}, settings=settings)
    finally:
        fake_effects.DURING.clear()
    assert fake_effects.applied == ["thing:a"]  # thing:b, no longer this run's to change, is left alone
    assert rem.outcome == "apply_failed" and "lock was lost" in (rem.escalation or "")


def test_a_person_slow_to_approve_does_not_hold_the_lock(h: Harness) -> None:
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, lock_ttl=0.2)

    def slow_person(step: Any, plan: Any) -> bool:
        time.sleep(0.5)  # the lock expired meanwhile (it is not renewed while a person decides) ...
        assert open_state(h.tmp_path).lock(["thing:a"], "other-run", ttl=60) is None
        return True  # ... and another run took it

    _, rem = h.run({"approval": "manual"}, settings=settings, approve=slow_person)
    assert rem.decision == "denied" and "while waiting for approval" in rem.decision_reason
    assert fake_effects.applied == []


def test_a_pause_while_a_person_decides_denies_the_change(h: Harness) -> None:
    def approve_after_the_pause(step: Any, plan: Any) -> bool:
        open_state(h.tmp_path).set_paused(True, "ic@host", "deploy freeze")  # the commander, meanwhile
        return True

    _, rem = h.run({"approval": "manual"}, approve=approve_after_the_pause)
    assert rem.decision == "denied"
    assert rem.decision_reason == "while waiting for approval, remediation is paused by ic@host: deploy freeze"
    assert fake_effects.applied == []


def test_a_limit_reached_while_a_person_decides_denies_and_escalates(h: Harness) -> None:
    def approve_after_another_run_acted(step: Any, plan: Any) -> bool:
        other = open_state(h.tmp_path)
        action = other.start_action(
            run_id="other-run", runbook="t", remediation="fix", target="thing:a", effect="fake.thing.fix"
        )
        other.finish_action(action, "ok")
        return True

    _, rem = h.run({"approval": "manual", "limit": {"max": 1, "per": "1h"}}, approve=approve_after_another_run_acted)
    assert rem.decision == "denied" and rem.decision_reason.startswith("while waiting for approval, limit reached")
    assert rem.escalation and fake_effects.applied == []


def test_two_approvals_of_one_run_do_not_share_a_lock(h: Harness) -> None:
    # Approvals are applied by whichever process takes them, under the run's id: one of the run's
    # remediations being applied elsewhere holds the target against this one.
    executor = h.executor({"approval": "manual"})
    executor.run("t", actor="t@h", approve=lambda s, p: None)
    ((run_id, *_),) = h.state.pending()
    assert h.state.lock(["thing:a"], f"{run_id}:elsewhere", ttl=60) is None
    decision = executor.decide_pending(run_id, approve=True, approver="alice")
    assert decision.decision == "denied" and f"locked by run {run_id} " in decision.decision_reason
    assert fake_effects.applied == []
    assert [t for t, _, _ in h.state.locks()] == ["thing:a"]  # the other attempt's lock is still there


def test_an_approval_counts_what_its_run_already_changed(h: Harness) -> None:
    settings = Settings(state_dir=h.tmp_path, default_cooldown=0, max_targets_per_run=1)
    executor = h.executor({"approval": "manual"}, settings=settings)
    executor.run("t", actor="t@h", approve=lambda s, p: None)
    ((run_id, *_),) = h.state.pending()
    # Another of the run's remediations changed a target already.
    action = h.state.start_action(run_id=run_id, runbook="t", remediation="other", target="thing:z", effect="x")
    h.state.finish_action(action, "ok")
    decision = executor.decide_pending(run_id, approve=True, approver="alice")
    assert decision.decision == "denied" and decision.decision_reason.startswith("blast radius: would change 2")
    assert fake_effects.applied == []


def test_a_log_that_breaks_during_a_change_stops_the_next(h: Harness) -> None:
    # Two changes on this engine (a dump, then a restore; two sessions to end): the first fills the
    # disk the audit log is on. The second is not made: nothing is changed that cannot be recorded.
    def break_the_log() -> None:
        h.audit_path.unlink()
        h.audit_path.mkdir()

    fake_effects.DURING.append(break_the_log)
    try:
        _, rem = h.run({"with": {"targets": ["thing:a", "thing:b"]}})
    finally:
        fake_effects.DURING.clear()
    assert fake_effects.applied == ["thing:a"]
    assert rem.outcome == "apply_failed" and "the audit log cannot be written" in (rem.escalation or "")
