"""Fuzzing the three doors outside text comes in by: runbook files, policy files and webhook payloads.
Whatever arrives: no crash, no 5xx, no traceback, and a bounded time per input (hypothesis's deadline)."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api import ApiSecurity, create_app
from agent.config import Settings
from agent.daemon import Daemon
from agent.exceptions import ConfigError, RunbookValidationError
from agent.loader import load_runbooks
from agent.policy import EnvironmentPolicy, load_policy
from agent.redaction import Redactor

FUZZ = settings(
    max_examples=120,
    deadline=timedelta(seconds=5),  # generous for a busy machine; a quadratic path takes minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text that has broken parsers before: templates, regex bombs, controls, surrogate-free odd Unicode.
nasty = st.sampled_from(
    [
        "{{ ''.__class__.__mro__ }}",
        "{% for x in range(999999999) %}{% endfor %}",
        "=~(a+)+b",
        "!~(",
        "\x1b[2J",
        "a" * 5000,
        "password=" * 200,
        "1m30s",
        "-5s",
        "ops.restart",
        "labels.service",
        "",
    ]
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=200), nasty
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)),
    max_leaves=30,
)

RUNBOOK_KEYS = ["id", "title", "severity", "triggers", "params", "checks", "remediations", "alert_params", "schedule"]
STEP_KEYS = ["id", "check", "do", "with", "timeout", "needs", "when", "approval", "limit", "verify", "cooldown"]
steps = st.dictionaries(st.sampled_from(STEP_KEYS), json_values, max_size=8)
runbook_docs = st.fixed_dictionaries(
    {
        "id": st.one_of(st.just("fuzz"), st.text(max_size=30)),
        "title": st.one_of(st.just("Fuzz"), json_values),
        "severity": st.one_of(st.just("SEV-2"), json_values),
        "checks": st.one_of(st.lists(steps, max_size=4), json_values),
    },
    optional={
        "triggers": st.one_of(st.lists(st.dictionaries(st.text(max_size=10), st.one_of(nasty, st.text())), max_size=3)),
        "params": st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), json_values, max_size=4),
        "remediations": st.lists(steps, max_size=3),
        "alert_params": json_values,
        "schedule": json_values,
        "extra": json_values,
    },
)


def _yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@FUZZ
@given(text=st.one_of(runbook_docs.map(_yaml), st.text(max_size=2000)))
def test_runbook_files_load_or_say_where_they_are_wrong(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "runbook.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_runbooks([path])
    except RunbookValidationError as exc:
        for problem in exc.problems:
            assert re.match(rf"^{re.escape(str(path))}:\d+: \S.*: .+", problem, re.DOTALL), problem


policy_docs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "environments": st.dictionaries(
                st.text(max_size=10),
                st.one_of(json_values, st.dictionaries(st.sampled_from(["mode", "auto", "deny", "x"]), json_values)),
            )
        }
    ),
)


@FUZZ
@given(
    text=st.one_of(policy_docs.map(_yaml), st.text(max_size=1000)),
    environment=st.one_of(st.none(), st.text(max_size=10)),
)
def test_policy_files_load_or_fail_as_config_errors(tmp_path_factory: Any, text: str, environment: str | None) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(load_policy(path, environment), EnvironmentPolicy)
    except ConfigError as exc:
        assert str(path) in exc.message or "environment" in exc.message


RUNBOOK = """
id: fuzz-target
title: Fuzz target
severity: SEV-4
triggers:
  - {alertname: "=~Fuzz.*"}
alert_params:
  service: {from: labels.service, pattern: "[a-z]{1,20}"}
params:
  service: app
checks:
  - id: load
    check: host.load
"""
labels = st.dictionaries(
    st.one_of(st.sampled_from(["alertname", "service", "severity"]), st.text(max_size=30)),
    st.one_of(nasty, st.text(max_size=100), st.just("FuzzDown")),
    max_size=8,
)
alert = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]), "labels": labels},
    optional={
        "annotations": st.dictionaries(st.text(max_size=20), st.text(max_size=300)),
        "fingerprint": st.text(max_size=40),
        "extra": json_values,
    },
)
payloads = st.one_of(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(["firing", "resolved"]),
            "receiver": st.text(max_size=20),
            "alerts": st.lists(alert, max_size=30),
        },
        optional={"groupLabels": labels, "version": json_values},
    ),
    json_values,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: Any) -> TestClient:
    root: Path = tmp_path_factory.mktemp("daemon")
    (root / "runbooks").mkdir()
    (root / "runbooks" / "rb.yaml").write_text(textwrap.dedent(RUNBOOK))
    daemon = Daemon(
        load_runbooks([root / "runbooks"]),
        Settings(state_dir=root / "state"),
        Redactor(),
        policy=EnvironmentPolicy(),
        dry_run=True,
        queue_size=10_000,
    )
    security = ApiSecurity(intake_token="fuzz-intake-token", decision_tokens={"alice": "fuzz-decision-token"})
    return TestClient(create_app(daemon, security), raise_server_exceptions=False)


@FUZZ
@given(payload=payloads, path=st.sampled_from(["/v1/alerts/alertmanager", "/v1/alerts"]))
def test_webhook_payloads_never_get_a_server_error(client: TestClient, payload: Any, path: str) -> None:
    body = json.dumps(payload, allow_nan=True).encode()
    response = client.post(
        path, content=body, headers={"Authorization": "Bearer fuzz-intake-token", "Content-Type": "application/json"}
    )
    assert response.status_code in (202, 413, 422, 503), response.text[:500]
    assert "Traceback" not in response.text
    json.loads(response.text)
