"""Durations in Prometheus's and Go's form wherever a duration is taken: runbook fields, every duration-like
param of a check or remediation, the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import load_settings
from agent.schema import parse_duration
from checks.http import GetParams
from checks.postgres import LongQueryParams
from remediations.docker import RestartParams, RollbackParams, ScaleParams


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1m30s", 90),
        ("1h30m", 5400),
        ("2w", 14 * 86400),
        ("1y", 365 * 86400),
        ("1d12h", 129600),
        ("500ms", 0.5),
        ("1.5h", 5400),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("250μs", 0.00025),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("5 m", 300),
        ("30", 30),
        (30, 30),
        (0.25, 0.25),
    ],
)
def test_prometheus_and_go_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["1x", "m", "", "-5s", "1h-30m", "5mins", "1e3s", "0s", True, "9" * 70 + "s", "nan", "\uff13s", "101y", 1e300],
)
def test_what_is_not_a_duration_is_refused_with_the_forms_named(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_zero_is_a_duration_only_where_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0.0


def test_duration_like_params_take_durations() -> None:
    target = {"service": "app"}
    assert RestartParams.model_validate({**target, "wait_healthy": "1m30s"}).wait_healthy == 90
    assert RestartParams.model_validate({**target, "wait_healthy": 45}).wait_healthy == 45  # seconds, as before
    assert ScaleParams.model_validate({**target, "replicas": 2, "wait_healthy": "2m"}).wait_healthy == 120
    assert RollbackParams.model_validate({**target, "wait_healthy": "90s"}).wait_healthy == 90
    long_query = LongQueryParams.model_validate({"dsn": "postgresql://x/y", "warn_seconds": "1m", "crit_seconds": "1h"})
    assert (long_query.warn_seconds, long_query.crit_seconds) == (60, 3600)
    http = GetParams.model_validate({"url": "http://127.0.0.1/", "warn_ms": "1.5s", "crit_ms": 4000})
    assert (http.warn_ms, http.crit_ms) == (1500, 4000)  # a bare number stays milliseconds
    as_text = GetParams.model_validate({"url": "http://127.0.0.1/", "warn_ms": "250"})  # from a template
    assert as_text.warn_ms == 250
    with pytest.raises(ValidationError, match="duration"):
        RestartParams.model_validate({**target, "wait_healthy": "soon"})


def test_configuration_takes_durations(tmp_path: Path) -> None:
    config = tmp_path / "runbook.yaml"
    config.write_text(
        "connect_timeout: 1500ms\nread_timeout: 1m\nlimit_window: 2h\nalert_retention: 2w\ndefault_cooldown: 0s\n"
    )
    settings = load_settings(config, env={})
    assert (settings.connect_timeout, settings.read_timeout) == (1.5, 60)
    assert (settings.limit_window, settings.alert_retention, settings.default_cooldown) == (7200, 14 * 86400, 0)
