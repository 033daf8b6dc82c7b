from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.exceptions import RunbookValidationError
from agent.loader import load_runbooks

REPO = Path(__file__).resolve().parents[2]
WriteRunbook = Callable[[str, str], Path]

GOOD = """
id: demo
title: Demo
severity: SEV-2
params:
  dsn: {default: "{{ config.database_url }}", secret: true}
  service: app
checks:
  - id: db
    check: postgres.connections
    with: {dsn: "{{ params.dsn }}", warn_pct: 80, crit_pct: 95}
  - id: app
    check: docker.container
    with: {service: "{{ params.service }}"}
    needs: [db]
remediations:
  - id: restart
    do: docker.restart
    with: {service: "{{ params.service }}"}
    when: checks.app.status == "CRITICAL" and checks.db.ok
"""


def problems(paths: list[Path]) -> list[str]:
    with pytest.raises(RunbookValidationError) as info:
        load_runbooks(paths)
    return info.value.problems


def test_seed_runbooks_load() -> None:
    runbooks = load_runbooks([REPO / "runbooks"])
    assert runbooks.ids() == ["app-down", "db-connection", "email-queue", "high-error-rate", "host-resources"]
    for loaded in runbooks.runbooks.values():
        assert (
            loaded.spec.symptoms and loaded.spec.advice and loaded.spec.remediations
        ) or loaded.spec.id == "host-resources"


def test_good_runbook_loads(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", GOOD)
    spec = load_runbooks([path.parent]).runbooks["demo"].spec
    assert spec.checks[1].needs == ["db"]
    assert spec.params["dsn"].secret


def test_wrong_type_in_with_names_file_line_and_field(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", GOOD.replace("crit_pct: 95", "crit_pct: high"))
    assert problems([path]) == [f"{path}:10: checks[0].with.crit_pct: expected a number, got 'high'"]


def test_all_errors_are_reported_not_just_the_first(write_runbook: WriteRunbook) -> None:
    text = (
        GOOD.replace("crit_pct: 95", "crit_pct: high")
        .replace("check: docker.container", "check: docker.containr")
        .replace("severity: SEV-2", "severity: SEV-9")
    )
    path = write_runbook("demo.yaml", text)
    found = problems([path])
    # severity is a schema error; the plugin errors are found once the schema holds.
    assert found == [f"{path}:3: severity: input should be 'SEV-1', 'SEV-2', 'SEV-3' or 'SEV-4', got 'SEV-9'"]
    path = write_runbook("demo.yaml", text.replace("SEV-9", "SEV-2"))
    found = problems([path])
    assert f"{path}:10: checks[0].with.crit_pct: expected a number, got 'high'" in found
    assert any(p.startswith(f"{path}:12: checks[1].check: unknown check 'docker.containr' (known: ") for p in found)
    assert len(found) == 2


def test_unknown_keys_are_errors(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", GOOD.replace("    needs: [db]", "    needz: [db]"))
    assert problems([path]) == [f"{path}:14: checks[1].needz: unknown field"]
    path = write_runbook("demo.yaml", GOOD.replace("warn_pct: 80", "warn_pc: 80"))
    assert problems([path]) == [f"{path}:10: checks[0].with.warn_pc: unknown field"]


def test_template_typos_fail_at_load(write_runbook: WriteRunbook) -> None:
    path = write_runbook(
        "demo.yaml", GOOD.replace('{{ params.service }}"}\n    needs', '{{ params.servce }}"}\n    needs')
    )
    assert problems([path]) == [f"{path}:13: checks[1].with.service: unknown params.servce (known: dsn, service)"]
    path = write_runbook("demo.yaml", GOOD.replace("checks.db.ok", "checks.dbb.ok"))
    assert problems([path]) == [f"{path}:19: remediations[0].when: unknown checks.dbb (known: app, db)"]
    path = write_runbook("demo.yaml", GOOD.replace("checks.db.ok", "checks.db.ok and ("))
    assert problems([path])[0].startswith(f"{path}:19: remediations[0].when: template syntax error")
    path = write_runbook("demo.yaml", GOOD.replace("config.database_url", "secrets.database_url"))
    assert problems([path])[0].startswith(f"{path}:5: params.dsn: unknown name 'secrets'")


def test_needs_must_name_an_earlier_check(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", GOOD.replace("needs: [db]", "needs: [nope]"))
    assert problems([path]) == [f"{path}:14: checks[1].needs[0]: 'nope' is not a check defined before this one"]


def test_duplicate_runbook_ids_across_files(write_runbook: WriteRunbook) -> None:
    first = write_runbook("a.yaml", GOOD)
    second = write_runbook("b.yaml", GOOD)
    assert problems([first.parent]) == [f"{second}:1: id: duplicate runbook id 'demo' (also in {first})"]


def test_a_key_given_twice_is_an_error_not_a_silent_override(write_runbook: WriteRunbook) -> None:
    text = GOOD.replace(
        "    do: docker.restart\n", "    do: docker.restart\n    approval: manual\n    approval: auto\n"
    )
    path = write_runbook("demo.yaml", text)
    assert problems([path]) == [
        f"{path}:19: remediations[0].approval: duplicate key (the earlier value would be ignored)"
    ]


def test_yaml_syntax_error_has_a_line(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", "id: demo\ntitle: [unclosed\nseverity: SEV-1\n")
    (problem,) = problems([path])
    assert problem.startswith(f"{path}:3: (yaml): not valid YAML")


def test_missing_required_fields(write_runbook: WriteRunbook) -> None:
    path = write_runbook("demo.yaml", "id: demo\ntitle: Demo\n")
    assert problems([path]) == [
        f"{path}:1: severity: required field is missing",
        f"{path}:1: checks: required field is missing",
    ]


def test_missing_required_plugin_param(write_runbook: WriteRunbook) -> None:
    path = write_runbook(
        "demo.yaml", GOOD.replace('with: {dsn: "{{ params.dsn }}", warn_pct: 80, crit_pct: 95}', "with: {}")
    )
    assert problems([path]) == [f"{path}:10: checks[0].with.dsn: required field is missing"]


def test_trigger_regex_must_compile(write_runbook: WriteRunbook) -> None:
    bad_trigger = 'severity: SEV-2\ntriggers:\n  - {alertname: "=~Db(("}'
    path = write_runbook("demo.yaml", GOOD.replace("severity: SEV-2", bad_trigger))
    (problem,) = problems([path])
    assert problem.startswith(f"{path}:5: triggers: label alertname: invalid regex 'Db(('")


def test_a_silence_timeout_needs_a_silence(write_runbook: WriteRunbook) -> None:
    silenced = GOOD.replace(
        'when: checks.app.status == "CRITICAL" and checks.db.ok', "silence: true\n    silence_timeout: 20m"
    )
    spec = load_runbooks([write_runbook("demo.yaml", silenced).parent]).runbooks["demo"].spec
    assert spec.remediations[0].silence and spec.remediations[0].silence_timeout == 1200.0
    path = write_runbook("demo.yaml", silenced.replace("silence: true", "silence: false"))
    (problem,) = problems([path])
    assert (
        problem.startswith(f"{path}:")
        and "silence_timeout and silence_grace are for a remediation with silence: true" in problem
    )
    short = silenced.replace("silence_timeout: 20m", "silence_timeout: 10s")  # shorter than verify_timeout (60s)
    (problem,) = problems([write_runbook("demo.yaml", short)])
    assert "silence_timeout must be at least verify_timeout and at most 1d" in problem


def test_hosts_are_for_steps_on_an_engine(write_runbook: WriteRunbook) -> None:
    """`hosts:` picks Docker engines: on a database check (or a database change) it would run once per
    engine for nothing, and `failing:` reads the per-engine results of a check that has hosts."""
    fanned = GOOD.replace(
        'with: {service: "{{ params.service }}"}\n    needs',
        'hosts: all\n    with: {service: "{{ host.name }}"}\n    needs',
    )
    path = write_runbook(
        "demo.yaml", fanned.replace("do: docker.restart", "do: docker.restart\n    hosts: failing:app")
    )
    load_runbooks([path])  # a docker check on every engine, a restart where it failed: fine
    path = write_runbook(
        "demo.yaml", GOOD.replace("check: postgres.connections", "check: postgres.connections\n    hosts: all")
    )
    assert problems([path]) == [
        f"{path}:10: checks[0].hosts: hosts: is for docker.* steps; postgres.connections does not run on an engine"
    ]
    path = write_runbook("demo.yaml", GOOD.replace("do: docker.restart", "do: docker.restart\n    hosts: failing:app"))
    (problem,) = problems([path])
    assert "remediations[0].hosts[0]: 'app' is not a check with hosts" in problem
    path = write_runbook(
        "demo.yaml", GOOD.replace("check: docker.container", "check: docker.container\n    hosts: [failing:db]")
    )
    assert any("failing:CHECK is for remediations" in p for p in problems([path]))
    path = write_runbook(
        "demo.yaml",
        GOOD.replace('{service: "{{ params.service }}"}\n    needs', '{service: "{{ host.name }}"}\n    needs'),
    )
    assert any("unknown name 'host'" in p for p in problems([path]))  # `host` only where there are hosts


def test_engines_hosts_names_are_checked_against_the_inventory_when_given(write_runbook: WriteRunbook) -> None:
    """With the settings' inventory, a name or label it lacks is an error of the file (line and field),
    not a failure of each run; a template is checked when it renders (its value comes later)."""
    fanned = GOOD.replace(
        'with: {service: "{{ params.service }}"}\n    needs',
        'hosts: [web-1, "role=db", "{{ params.service }}"]\n    with: {service: app}\n    needs',
    )
    path = write_runbook("demo.yaml", fanned)
    inventory = {"web-1": {"role": "web"}, "web-2": {"role": "web"}}
    with pytest.raises(RunbookValidationError) as info:
        load_runbooks([path], inventory=inventory)
    assert info.value.problems == [f"{path}:13: checks[1].hosts[1]: no engine of the inventory has the label role=db"]
    load_runbooks([path], inventory={**inventory, "db-1": {"role": "db"}})
    load_runbooks([path])  # no inventory given: left to the run
    with pytest.raises(RunbookValidationError) as info:
        load_runbooks([path], inventory={})
    assert "checks[1].hosts[0]: the config has no `engines` inventory to choose from" in info.value.problems[0]
