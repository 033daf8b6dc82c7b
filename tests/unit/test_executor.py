"""The executor with fake plugins: concurrency, timeouts, failures as results, needs, decisions."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agent.audit import AuditLog, read_records
from agent.config import Settings
from agent.exceptions import TargetUnreachable
from agent.executor import Executor, ParamError
from agent.loader import LoadedRunbook, RunbookSet
from agent.plugins import Outcome, PluginSet
from agent.redaction import Redactor
from agent.registry import Registry
from agent.schema import Runbook
from agent.status import Status
from agent.templating import Templates

plugins = PluginSet("fake")
barrier = threading.Barrier(2, timeout=5)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = "OK"
    n: int = 0


@plugins.check("fake.status", Params)
def status(ctx: Any, p: Params) -> Outcome:
    return Outcome(Status(p.value), f"said {p.value}", metrics={"n": float(p.n)})


@plugins.check("fake.together", Params)
def together(ctx: Any, p: Params) -> Outcome:
    # Passes only when two checks wait here at the same time: proof they run concurrently.
    barrier.wait()
    return Outcome(Status.OK, "met")


@plugins.check("fake.sleep", Params)
def sleep(ctx: Any, p: Params) -> Outcome:
    time.sleep(p.n)
    return Outcome(Status.OK, "woke")


@plugins.check("fake.boom", Params)
def boom(ctx: Any, p: Params) -> Outcome:
    raise RuntimeError("bug in check")


@plugins.check("fake.refused", Params)
def refused(ctx: Any, p: Params) -> Outcome:
    raise TargetUnreachable("fake_refused", "connection refused")


def make(tmp_path: Path, spec: dict[str, Any], **settings_: Any) -> tuple[Executor, Path]:
    registry = Registry(check_modules={}, remediation_modules={})
    registry.add_plugins(plugins)
    runbook = Runbook.model_validate({"id": "t", "title": "T", "severity": "SEV-3", **spec})
    runbooks = RunbookSet({"t": LoadedRunbook(runbook, Path("t.yaml"))}, Templates(), registry)
    audit_path = tmp_path / "audit.jsonl"
    settings = Settings(state_dir=tmp_path, **settings_)
    redactor = Redactor()
    return Executor(runbooks, settings, redactor, AuditLog(audit_path, redactor)), audit_path


def test_checks_run_concurrently(tmp_path: Path) -> None:
    executor, _ = make(
        tmp_path, {"checks": [{"id": "a", "check": "fake.together"}, {"id": "b", "check": "fake.together"}]}
    )
    report = executor.run("t", actor="test")
    assert [c.status for c in report.checks] == [Status.OK, Status.OK]


def test_timeout_exception_and_refusal_become_results(tmp_path: Path) -> None:
    executor, _ = make(
        tmp_path,
        {
            "checks": [
                {"id": "slow", "check": "fake.sleep", "with": {"n": 3}, "timeout": 0.2},
                {"id": "bug", "check": "fake.boom"},
                {"id": "down", "check": "fake.refused"},
                {"id": "fine", "check": "fake.status"},
            ]
        },
    )
    report = executor.run("t", actor="test")
    by_id = {c.id: c for c in report.checks}
    assert (by_id["slow"].status, by_id["slow"].code) == (Status.CRITICAL, "timeout")
    assert (by_id["bug"].status, by_id["bug"].code) == (Status.UNKNOWN, "check_error")
    assert "bug in check" in by_id["bug"].summary
    assert (by_id["down"].status, by_id["down"].code) == (Status.CRITICAL, "fake_refused")
    assert by_id["fine"].status is Status.OK
    assert report.status is Status.CRITICAL


def test_needs_waits_and_skips_after_a_failure(tmp_path: Path) -> None:
    executor, _ = make(
        tmp_path,
        {
            "checks": [
                {"id": "first", "check": "fake.status", "with": {"value": "CRITICAL"}},
                {"id": "second", "check": "fake.status", "needs": ["first"]},
                {"id": "warned", "check": "fake.status", "with": {"value": "WARNING"}},
                {"id": "third", "check": "fake.status", "needs": ["warned"]},
            ]
        },
    )
    by_id = {c.id: c for c in executor.run("t", actor="test").checks}
    assert (by_id["second"].status, by_id["second"].code) == (Status.UNKNOWN, "dependency_failed")
    assert by_id["third"].status is Status.OK  # a WARNING does not block what needs it


def test_params_render_into_with_and_overrides_apply(tmp_path: Path) -> None:
    executor, _ = make(
        tmp_path,
        {
            "params": {"level": "WARNING", "n": 3},
            "checks": [
                {"id": "a", "check": "fake.status", "with": {"value": "{{ params.level }}", "n": "{{ params.n }}"}}
            ],
        },
    )
    assert executor.run("t", actor="test").checks[0].status is Status.WARNING
    report = executor.run("t", actor="test", overrides={"level": "OK", "n": "7"})
    assert report.checks[0].status is Status.OK and report.checks[0].metrics == {"n": 7.0}
    bad = executor.run("t", actor="test", overrides={"n": "many"})
    assert (bad.checks[0].status, bad.checks[0].code) == (Status.UNKNOWN, "bad_params")
    with pytest.raises(ParamError, match="unknown param nope"):
        executor.run("t", actor="test", overrides={"nope": "1"})


def test_remediation_decisions_and_audit_trail(tmp_path: Path) -> None:
    executor, audit_path = make(
        tmp_path,
        {
            "params": {"token": {"default": "tkn-0123456789", "secret": True}},
            "checks": [{"id": "a", "check": "fake.status", "with": {"value": "CRITICAL"}}],
            "remediations": [
                {"id": "fix", "do": "fake.fix", "when": 'checks.a.status == "CRITICAL"'},
                {"id": "other", "do": "fake.fix", "when": "checks.a.ok"},
                {"id": "unconditional", "do": "fake.fix"},
            ],
        },
    )
    report = executor.run("t", actor="me@host", dry_run=True)
    decisions = {d.id: d for d in report.remediations}
    assert decisions["fix"].would_apply and not decisions["other"].would_apply
    assert decisions["unconditional"].would_apply  # no `when`: applies when status is not OK
    assert not any(d.applied for d in report.remediations)
    events = [r["event"] for r in read_records(audit_path)]
    assert events == ["run_started", "check_result"] + ["remediation_decision"] * 3 + ["run_finished"]
    records = list(read_records(audit_path))
    assert {r["mode"] for r in records} == {"dry-run"} and {r["actor"] for r in records} == {"me@host"}
    assert "tkn-0123456789" not in audit_path.read_text()
    assert report.params == {"token": "***"}


def test_a_subset_runs_without_the_checks_it_needs(tmp_path: Path) -> None:
    # Verify re-runs only named checks; their `needs` outside the subset must not block them.
    executor, _ = make(
        tmp_path,
        {
            "checks": [
                {"id": "first", "check": "fake.status"},
                {"id": "second", "check": "fake.status", "needs": ["first"]},
            ]
        },
    )
    from agent.context import RunClients
    from agent.executor import _Audit

    spec = executor.runbooks.runbooks["t"].spec
    audit = _Audit(executor.audit)
    results = executor._run_checks([spec.checks[1]], {}, RunClients(executor.settings), audit, None, "verify")
    assert [(r.id, r.status) for r in results] == [("second", Status.OK)]


hold = threading.Event()


@plugins.check("fake.hang", Params)
def hang(ctx: Any, p: Params) -> Outcome:
    hold.wait(60)
    return Outcome(Status.OK, "released")


def test_checks_stuck_past_their_deadline_are_bounded(tmp_path: Path) -> None:
    from agent.executor import _THREADS

    parallel = 8
    checks = [{"id": f"c{i}", "check": "fake.hang", "timeout": 0.05} for i in range(_THREADS.limit + 3 * parallel)]
    executor, _ = make(tmp_path, {"checks": checks}, max_parallel_checks=parallel)
    before = {t for t in threading.enumerate() if t.name.startswith("check-")}
    try:
        report = executor.run("t", actor="test")
        alive = {t for t in threading.enumerate() if t.name.startswith("check-")} - before
        codes = [c.code for c in report.checks]
        # Never more threads stuck than the bound (plus those within their deadline when it was reached):
        # past it, checks are reported, not started.
        assert len(alive) <= _THREADS.limit + parallel
        assert codes.count("too_many_stuck_checks") >= parallel
        assert codes.count("timeout") + codes.count("too_many_stuck_checks") == len(checks)
    finally:
        hold.set()
    deadline = time.monotonic() + 30
    while _THREADS.stuck and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _THREADS.stuck == 0
    hold.clear()


def test_templates_see_only_allowed_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_runbook: Any
) -> None:
    from agent.exceptions import RunbookValidationError
    from agent.loader import load_runbooks

    monkeypatch.setenv("RUNBOOK_API_TOKEN", "the-daemons-own-token")
    monkeypatch.setenv("APP_URL", "http://app")
    text = """
        id: leak
        title: Leak
        severity: SEV-4
        params:
          where: "{{ env.APP_URL }}"
          token: "{{ env.RUNBOOK_API_TOKEN }}"
        checks:
          - {id: a, check: host.load}
        """
    path = write_runbook("leak.yaml", text)
    with pytest.raises(RunbookValidationError, match=r"unknown env.RUNBOOK_API_TOKEN \(known: APP_URL\)"):
        load_runbooks([path], template_env=["APP_URL"])
    # And if a template reaches for it another way, it is not there to find.
    executor, _ = make(
        tmp_path,
        {"params": {"token": "{{ env['RUNBOOK_API_TOKEN'] }}"}, "checks": [{"id": "a", "check": "fake.status"}]},
    )
    with pytest.raises(ParamError, match="RUNBOOK_API_TOKEN"):
        executor.run("t", actor="test")
    executor, _ = make(
        tmp_path, {"params": {"where": "{{ env.APP_URL }}"}, "checks": [{"id": "a", "check": "fake.status"}]}
    )
    assert executor.resolve_params(executor.runbooks.runbooks["t"], {}).values == {"where": "http://app"}
