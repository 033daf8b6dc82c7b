"""Routing alerts to runbooks as Prometheus users write it: Alertmanager's own matcher strings in a
trigger (pasted from alertmanager.yml), and an alert that names its runbook (a `runbook` label or a
`runbook_url` annotation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.alerts import IncomingAlert, route
from agent.exceptions import RunbookValidationError
from agent.loader import load_runbooks
from agent.schema import parse_matcher

WriteRunbook = Callable[[str, str], Path]

RUNBOOK = """
id: {id}
title: T
severity: SEV-2
{triggers}
checks:
  - {{id: load, check: host.load}}
"""


def alert(labels: dict[str, str], annotations: dict[str, str] | None = None) -> IncomingAlert:
    return IncomingAlert.build("alertmanager", "firing", labels, annotations or {}, None)


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ('alertname="DbDown"', ("alertname", "=DbDown")),
        ('severity!="info"', ("severity", "!=info")),
        ('job=~"db.*"', ("job", "=~db.*")),
        ('instance !~ "test-.*"', ("instance", "!~test-.*")),
        ("team=db", ("team", "=db")),
        ('msg="say \\"hi\\""', ("msg", '=say "hi"')),
        ('odd="=~literal"', ("odd", "==~literal")),  # a value that looks like an operator stays a value
    ],
)
def test_alertmanager_matcher_strings(text: str, pair: tuple[str, str]) -> None:
    assert parse_matcher(text) == pair


def test_a_trigger_pasted_from_alertmanager_routes_with_its_semantics(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(
        RUNBOOK.format(
            id="db",
            triggers="triggers:\n  - matchers: ['alertname=~\"Db.*\"', 'severity!=\"info\"', 'severity!=\"none\"']",
        )
    )
    (tmp_path / "literal.yaml").write_text(
        RUNBOOK.format(id="literal", triggers="triggers:\n  - matchers: ['odd=\"=~x\"']")
    )
    runbooks = load_runbooks([tmp_path])
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "critical"})).spec.id == "db"
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "info"})) is None
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "none"})) is None  # two on one label
    assert route(runbooks, alert({"alertname": "XDbDown"})) is None  # anchored, as Alertmanager
    assert route(runbooks, alert({"odd": "=~x"})).spec.id == "literal"
    assert route(runbooks, alert({"odd": "x"})) is None


@pytest.mark.parametrize(
    ("matchers", "named"),
    [("['alertname~\"x\"']", "expected a matcher"), ("['job=~\"db((\"']", "invalid regex"), ("[]", "at least 1")],
)
def test_bad_matcher_strings_are_load_errors(write_runbook: WriteRunbook, matchers: str, named: str) -> None:
    path = write_runbook("db.yaml", RUNBOOK.format(id="db", triggers=f"triggers:\n  - matchers: {matchers}"))
    with pytest.raises(RunbookValidationError) as info:
        load_runbooks([path])
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:5: triggers[0].matchers: ") and named in problem, problem


def test_an_alert_names_its_runbook_by_label_or_runbook_url(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(RUNBOOK.format(id="db-connection", triggers="triggers: [{alertname: DbDown}]"))
    (tmp_path / "app.yaml").write_text(RUNBOOK.format(id="app-down", triggers="triggers: [{alertname: AppDown}]"))
    (tmp_path / "manual.yaml").write_text(RUNBOOK.format(id="manual-only", triggers=""))
    runbooks = load_runbooks([tmp_path])
    other = {"alertname": "SomethingElse"}
    assert route(runbooks, alert({**other, "runbook": "app-down"})).spec.id == "app-down"
    for url in (
        "https://wiki.example.com/runbooks/db-connection",
        "https://git.example.com/ops/runbooks/blob/main/db-connection.md",
        "https://runbooks.example.com/#db-connection",
        "https://example.com/runbooks/db-connection/",
    ):
        assert route(runbooks, alert(other, {"runbook_url": url})).spec.id == "db-connection", url
    # The name wins over a trigger another runbook has for the alert.
    assert route(runbooks, alert({"alertname": "AppDown", "runbook": "db-connection"})).spec.id == "db-connection"
    # A runbook that takes no alerts cannot be named; a wiki page names nothing: the triggers decide.
    assert route(runbooks, alert({**other, "runbook": "manual-only"})) is None
    wiki = {"runbook_url": "https://wiki.example.com/HighErrorRate"}
    assert route(runbooks, alert({"alertname": "AppDown"}, wiki)).spec.id == "app-down"
    assert route(runbooks, alert({**other, "runbook": "no-such"})) is None
