"""agent.nagios: the plugin output's shape, whatever the checks said."""

from __future__ import annotations

from agent.nagios import render, unknown


def check(id_: str, status: str, summary: str, metrics: dict[str, object], thresholds: dict[str, object] | None = None):
    return {
        "id": id_,
        "check": "x.y",
        "status": status,
        "summary": summary,
        "metrics": metrics,
        "thresholds": thresholds or {},
    }


def test_first_line_names_the_failing_checks_and_no_text_can_start_the_perfdata() -> None:
    report = {
        "runbook": "db-connection",
        "status": "CRITICAL",
        "checks": [
            check("pool", "CRITICAL", "97 of 100 | in use\nnext\x1b[31m", {"used_pct": 97.0}, {"used_pct": [80, 90]}),
            check("reach", "OK", "fine", {"latency_ms": 2.5, "big": 12345678.0, "nan": float("nan"), "flag": True}),
            check("a b", "WARNING", "spaced", {"n": 1}),
        ],
    }
    first, *rest = render(report).split("\n")
    text, _, perfdata = first.partition(" | ")
    assert text == "DB-CONNECTION CRITICAL - pool: 97 of 100 / in use next\\x1b[31m; a b: spaced"
    assert perfdata.split(" ") == [
        "pool_used_pct=97%;80;90;0;100",
        "reach_latency_ms=2.5ms",
        "reach_big=12345678",
        "'a",
        "b_n'=1",
    ]
    assert rest == [
        "[CRITICAL] pool (x.y): 97 of 100 / in use next\\x1b[31m",
        "[OK] reach (x.y): fine",
        "[WARNING] a b (x.y): spaced",
    ]


def test_a_run_after_remediation_reports_its_final_state() -> None:
    report = {
        "runbook": "app-down",
        "status": "CRITICAL",
        "final_status": "OK",
        "checks": [check("app", "CRITICAL", "exited", {})],
        "final_checks": [check("app", "OK", "running", {})],
        "remediations": [{"id": "restart", "escalation": None}],
    }
    assert render(report) == "APP-DOWN OK - all 1 checks OK\n[OK] app (x.y): running"


def test_unknown_is_one_line() -> None:
    assert unknown("db", "cannot read\nconfig | x") == "DB UNKNOWN - cannot read config / x"


def test_labels_and_numbers_stay_within_the_format() -> None:
    report = {
        "runbook": "x",
        "status": "OK",
        "checks": [check("c", "OK", "s", {"a\nb": 1, "tiny_ms": 1e-7, "cpu_pct": 180.5}, {"cpu_pct": [85, 95]})],
    }
    first = render(report).split("\n")[0]
    assert first.endswith("| c_a_b=1 c_tiny_ms=0.0000001ms c_cpu_pct=180.5%;85;95")


def test_a_usage_error_with_nagios_is_an_unknown_status_line_on_stdout() -> None:
    from click.testing import CliRunner

    from agent.cli import cli

    result = CliRunner().invoke(cli, ["run", "db-connection", "--nagios", "--nosuch"])
    assert result.exit_code == 3
    assert result.stdout.startswith("DB-CONNECTION UNKNOWN - No such option '--nosuch'")
