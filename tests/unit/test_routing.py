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
    ("text", "rule"),
    [
        ('alertname="DbDown"', ("alertname", "=", "DbDown")),
        ('severity!="info"', ("severity", "!=", "info")),
        ('job=~"db.*"', ("job", "=~", "db.*")),
        ('instance !~ "test-.*"', ("instance", "!~", "test-.*")),
        ("team=db", ("team", "=", "db")),
        ('msg="say \\"hi\\""', ("msg", "=", 'say "hi"')),
        ('odd="=~literal"', ("odd", "=", "=~literal")),  # a value that looks like an operator stays a value
        ('team="~ops"', ("team", "=", "~ops")),
    ],
)
def test_alertmanager_matcher_strings(text: str, rule: tuple[str, str, str]) -> None:
    assert parse_matcher(text) == rule


def test_a_trigger_pasted_from_alertmanager_routes_with_its_semantics(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(
        RUNBOOK.format(
            id="db",
            triggers="triggers:\n  - matchers: ['alertname=~\"Db.*\"', 'severity!=\"info\"', 'severity!=\"none\"']",
        )
    )
    (tmp_path / "literal.yaml").write_text(
        RUNBOOK.format(id="literal", triggers="triggers:\n  - matchers: ['odd=\"=~x\"', 'team=\"~ops\"']")
    )
    runbooks = load_runbooks([tmp_path])
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "critical"})).spec.id == "db"
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "info"})) is None
    assert route(runbooks, alert({"alertname": "DbDown", "severity": "none"})) is None  # two on one label
    assert route(runbooks, alert({"alertname": "XDbDown"})) is None  # anchored, as Alertmanager
    assert route(runbooks, alert({"odd": "=~x", "team": "~ops"})).spec.id == "literal"  # literal values
    assert route(runbooks, alert({"odd": "x", "team": "~ops"})) is None
    assert route(runbooks, alert({"odd": "=~x", "team": "ops"})) is None


@pytest.mark.parametrize(
    ("matchers", "named"),
    [
        ("['alertname~\"x\"']", "expected one matcher"),
        ("['job=~\"db((\"']", "invalid regex"),
        ("[]", "at least 1"),
        ("['alertname=DbDown,env=prod']", "per item"),  # Alertmanager's comma list: one item each here
        ("'alertname=\"DbDown\"'", "list"),  # a string, not a list: an error, not a label named matchers
    ],
)
def test_bad_matcher_strings_are_load_errors(write_runbook: WriteRunbook, matchers: str, named: str) -> None:
    path = write_runbook("db.yaml", RUNBOOK.format(id="db", triggers=f"triggers:\n  - matchers: {matchers}"))
    with pytest.raises(RunbookValidationError) as info:
        load_runbooks([path])
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:5: triggers[0].matchers: ") and named in problem, problem


def test_an_alert_names_its_runbook_among_those_whose_triggers_match(tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(RUNBOOK.format(id="db-connection", triggers="triggers: [{alertname: '=~.+'}]"))
    (tmp_path / "app.yaml").write_text(RUNBOOK.format(id="app-down", triggers="triggers: [{alertname: '=~.+'}]"))
    (tmp_path / "err.yaml").write_text(RUNBOOK.format(id="errors", triggers="triggers: [{alertname: HighErrors}]"))
    runbooks = load_runbooks([tmp_path])
    some = {"alertname": "SomethingElse"}
    assert route(runbooks, alert(some)).spec.id == "app-down"  # first by id among those that match
    assert route(runbooks, alert({**some, "runbook": "db-connection"})).spec.id == "db-connection"
    for url in (
        "https://wiki.example.com/runbooks/db-connection",
        "https://git.example.com/ops/runbooks/blob/main/db-connection.md",
        "https://example.com/runbooks/db-connection/",
    ):
        assert route(runbooks, alert(some, {"runbook_url": url})).spec.id == "db-connection", url
    # A name alone routes nowhere: "errors" does not take this alert, whatever names it.
    assert route(runbooks, alert({**some, "runbook": "errors"})).spec.id == "app-down"
    assert route(runbooks, alert({"alertname": "Other", "runbook": "errors"}, {})).spec.id == "app-down"
    # A wiki anchor or page names nothing; a URL that does not parse is outside data, not an error.
    for url in ("https://wiki.example.com/oncall#db-connection", "http://[wiki/x", "https://wiki/HighErrors"):
        assert route(runbooks, alert(some, {"runbook_url": url})).spec.id == "app-down", url


def test_routing_follows_the_runbooks_loaded_now(tmp_path: Path) -> None:
    # Triggers are compiled once per loaded set: a set loaded later (a reload) routes by its own triggers,
    # and the earlier set, still used by a run in flight, by its own.
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, name in ((first, "OldName"), (second, "NewName")):
        directory.mkdir()
        (directory / "db.yaml").write_text(RUNBOOK.format(id="db", triggers=f"triggers:\n  - {{alertname: {name}}}"))
    old, new = load_runbooks([first]), load_runbooks([second])
    for _ in range(2):
        assert route(old, alert({"alertname": "OldName"})) is not None
        assert route(old, alert({"alertname": "NewName"})) is None
        assert route(new, alert({"alertname": "NewName"})) is not None
        assert route(new, alert({"alertname": "OldName"})) is None


def test_a_trigger_holds_only_if_every_rule_does_whatever_their_order(tmp_path: Path) -> None:
    # The comparisons are tried before the patterns; which runs first never changes the answer.
    (tmp_path / "q.yaml").write_text(
        RUNBOOK.format(id="q", triggers="triggers:\n  - {alertname: '=~Queue.*', queue: email, env: '!=staging'}")
    )
    runbooks = load_runbooks([tmp_path])
    assert route(runbooks, alert({"alertname": "QueueDepth", "queue": "email"})) is not None
    assert route(runbooks, alert({"alertname": "QueueDepth", "queue": "email", "env": "staging"})) is None
    assert route(runbooks, alert({"alertname": "Other", "queue": "email"})) is None
    assert route(runbooks, alert({"alertname": "QueueDepth", "queue": "sms"})) is None
