"""The runbook JSON Schema (`runbook schema`): the shipped file is what the code generates, it is a valid
draft 2020-12 schema, every shipped runbook passes it, and the mistakes the loader rejects are rejected
by it too, where a schema can see them (editors report them as they are typed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from agent.cli import cli
from agent.runbook_schema import runbook_schema
from tests.unit.test_loader import GOOD

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "runbooks" / "runbook.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = runbook_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, text: str) -> list[str]:
    document: Any = yaml.safe_load(text)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_shipped_schema_is_what_the_code_generates() -> None:
    assert json.loads(SHIPPED.read_text()) == runbook_schema(), (
        "the runbook format changed: run `runbook schema --out runbooks/runbook.schema.json`"
    )
    assert json.loads(SHIPPED.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_runbook_schema_prints_it_and_writes_it(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli, ["schema"])
    assert printed.exit_code == 0 and json.loads(printed.output) == runbook_schema()
    out = tmp_path / "schema.json"
    written = CliRunner().invoke(cli, ["schema", "--out", str(out)])
    assert written.exit_code == 0 and json.loads(out.read_text()) == runbook_schema()


def test_every_shipped_runbook_passes(validator: Draft202012Validator) -> None:
    shipped = sorted((REPO / "runbooks").glob("*.yaml"))
    assert len(shipped) >= 5
    for path in shipped:
        assert errors(validator, path.read_text()) == [], path


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        GOOD.replace("    needs: [db]", "    needs: [db]\n    timeout: 1m30s")
        + "    verify_timeout: 2m\n",  # durations
        GOOD.replace("warn_pct: 80", 'warn_pct: "{{ params.warn }}"'),  # any with: value may be a template
        GOOD.replace("severity: SEV-2", "severity: SEV-2\ntriggers:\n  - matchers: ['alertname=~\"Db.*\"']"),
        GOOD.replace("service: app\n", "service: app\n  idle: {default: 30s, description: idle for}\n"),
    ],
)
def test_good_runbooks_pass(validator: Draft202012Validator, text: str) -> None:
    assert errors(validator, text) == []


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("crit_pct: 95", "crit_pct: high"), "checks/0/with/crit_pct"),  # a param's type
        (GOOD.replace("warn_pct: 80", "warn_pc: 80"), "checks/0/with"),  # a param that does not exist
        (GOOD.replace("severity: SEV-2", "severity: SEV-9"), "severity"),
        (GOOD.replace("    needs: [db]", "    needz: [db]"), "checks/1"),  # an unknown key
        (GOOD.replace('with: {dsn: "{{ params.dsn }}", warn_pct: 80, crit_pct: 95}', "with: {}"), "checks/0/with"),
        (GOOD.replace("check: postgres.connections", "check: postgres.nope"), "checks/0/check"),
        (GOOD.replace("do: docker.restart", "do: docker.reboot"), "remediations/0/do"),
        (GOOD + "    timeout: 5 minutes\n", "remediations/0"),  # not a key of a remediation, and...
        (GOOD.replace("    needs: [db]", "    needs: [db]\n    timeout: 5 minutes"), "checks/1/timeout"),
        (GOOD.replace("  - id: app\n", "  - id: App\n"), "checks/1/id"),
        ("id: demo\ntitle: Demo\n", ""),  # severity and checks missing
        (GOOD.replace("severity: SEV-2", "severity: SEV-2\ntriggers:\n  - matchers: nope"), "triggers/0"),
        (GOOD.replace("when: checks", "approval: sometimes\n    when: checks"), "remediations/0/approval"),
    ],
)
def test_broken_runbooks_are_rejected_where_the_mistake_is(
    validator: Draft202012Validator, text: str, where: str
) -> None:
    found = errors(validator, text)
    assert found and any(e.startswith(where) for e in found), found
