from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import cli

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("docker", "psycopg", "redis", "fastapi", "uvicorn", "httpx")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["validate"], ["show", "db-connection"]])
def test_light_commands_do_not_import_clients(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_list_and_show() -> None:
    code, out, _ = invoke("list", "--runbooks", str(REPO / "runbooks"))
    assert code == 0 and "db-connection" in out and "SEV-1" in out
    code, out, _ = invoke("show", "db-connection", "--runbooks", str(REPO / "runbooks"))
    assert code == 0 and "Database Connection Failed" in out and "postgres.query" in out
    code, out, _ = invoke("show", "postgres.connections", "--runbooks", str(REPO / "runbooks"))
    assert code == 0 and "warn_pct" in out and "max_connections" in out


def test_validate_reports_each_problem_on_a_line_and_exits_2(write_runbook: Callable[[str, str], Path]) -> None:
    text = (REPO / "runbooks" / "db-connection.yaml").read_text()
    bad = text.replace("warn_pct: 80, crit_pct: 90", "warn_pct: 80, crit_pct: high").replace(
        "check: postgres.long_query", "check: postgres.long_queries"
    )
    path = write_runbook("db.yaml", bad)
    text_lines = path.read_text().splitlines()
    crit_line = next(i for i, line in enumerate(text_lines, 1) if "crit_pct: high" in line)
    check_line = next(i for i, line in enumerate(text_lines, 1) if "postgres.long_queries" in line)
    code, out, err = invoke("validate", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0] == f"{path}:{crit_line}: checks[1].with.crit_pct: expected a number, got 'high'"
    assert lines[1].startswith(f"{path}:{check_line}: checks[3].check: unknown check 'postgres.long_queries'")
    assert "Traceback" not in err
    code, out, _ = invoke("validate", str(REPO / "runbooks"))
    assert code == 0 and "5 runbooks valid" in out


def test_unknown_runbook_exits_3_unknown_listing_known_ids() -> None:
    # `run` is read by monitoring systems as a Nagios plugin: 2 would be CRITICAL, a verdict it never had.
    code, _, err = invoke("run", "nope", "--runbooks", str(REPO / "runbooks"))
    assert code == 3
    assert err.strip().startswith("unknown runbook 'nope' (known: app-down, db-connection")


def test_usage_errors_are_3_for_run_and_2_for_the_other_commands() -> None:
    assert invoke("run")[0] == 3  # no runbook id
    assert invoke("run", "db-connection", "--no-such-option")[0] == 3
    assert invoke("list", "--no-such-option")[0] == 2
    assert invoke("show")[0] == 2


def test_version() -> None:
    from importlib.metadata import version

    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"runbook {version('runbook')}"


def test_show_of_an_unknown_check_is_one_clear_line() -> None:
    code, _, err = invoke("show", "postgres.nosuch", "--runbooks", str(REPO / "runbooks"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("unknown check or remediation 'postgres.nosuch' (checks: ") and "postgres.query" in err
    assert "internal error" not in err and "docker.restart" in err  # the remediations are named too


def test_bad_param_syntax_and_unknown_param(tmp_path: Path) -> None:
    env = {"RUNBOOK_STATE_DIR": str(tmp_path)}
    code, _, err = invoke("run", "email-queue", "-p", "queue", "--runbooks", str(REPO / "runbooks"), env=env)
    assert code == 3 and "expected key=value" in err
    code, _, err = invoke("run", "email-queue", "-p", "qeue=x", "--runbooks", str(REPO / "runbooks"), env=env)
    assert (
        code == 3
        and err.strip() == "email-queue: unknown param qeue (known: redis_url, queue, worker_service, scale_to)"
    )


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("read_timeout: soon\n")
    code, _, err = invoke("--config", str(config), "run", "email-queue", "--runbooks", str(REPO / "runbooks"))
    assert code == 3 and err.strip().startswith(f"{config}: read_timeout:")  # no verdict: UNKNOWN
    code, _, err = invoke(
        "--config", str(tmp_path / "missing.yaml"), "run", "app-down", "--runbooks", str(REPO / "runbooks")
    )
    assert code == 3 and "cannot read config file" in err
    code, _, err = invoke("--config", str(config), "list", "--runbooks", str(REPO / "runbooks"))
    assert code == 2 and err.strip().startswith(f"{config}: read_timeout:")


def test_audit_verify_names_the_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    from agent.audit import AuditLog
    from agent.redaction import Redactor

    audit = AuditLog(log, Redactor(), run_id="abc")
    for i in range(3):
        audit.record("check_result", i=i)
    code, out, _ = invoke("audit", "verify", str(log))
    assert code == 0 and "3 records, chain intact" in out
    code, out, _ = invoke("audit", "show", str(log), "--run", "abc", "--json")
    assert code == 0 and [json.loads(line)["i"] for line in out.splitlines()] == [0, 1, 2]
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[2])
    code, _, err = invoke("audit", "verify", str(log))
    assert code == 1 and err.startswith(f"{log}:2: hash chain broken")


def test_audit_show_merges_the_agents_chains_of_a_run_each_verified(tmp_path: Path) -> None:
    """Two agents touched one run, each with its own chain: one timeline, in time order, each record
    naming its chain; a chain that is not intact is refused, naming it and its first bad line."""
    from agent.audit import AuditSink

    a, b = tmp_path / "agent-a" / "audit.jsonl", tmp_path / "agent-b" / "audit.jsonl"
    for path in (a, b):
        path.parent.mkdir(mode=0o700)

    def at(second: int, micro: int = 0) -> str:
        return f"2026-11-29T10:00:{second:02d}{f'.{micro:06d}' if micro else ''}Z"

    AuditSink(a).write_many(
        [
            {"ts": at(1), "event": "run_started", "run_id": "r1", "actor": "alert@a"},
            {"ts": at(2), "event": "run_started", "run_id": "other", "actor": "alert@a"},
            {"ts": at(5, 1), "event": "run_interrupted", "run_id": "r1", "actor": "daemon@a"},
        ]
    )
    AuditSink(b).write_many(
        [
            {"ts": at(3), "event": "approval", "run_id": "r1", "actor": "alice@b"},
            {"ts": at(5), "event": "apply_started", "run_id": "r1", "actor": "alice@b"},  # .000000: before 5.000001
        ]
    )
    code, out, err = invoke("audit", "show", str(a), str(b), "--run", "r1", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["event"], r["chain"]) for r in rows] == [
        ("run_started", str(a)),
        ("approval", str(b)),
        ("apply_started", str(b)),
        ("run_interrupted", str(a)),
    ]
    code, out, _ = invoke("audit", "show", str(a), str(b), "--run", "r1")
    assert code == 0 and out.splitlines()[1].startswith(f"[{b}] {at(3)} #1 r1 approval")

    lines = b.read_text().splitlines(keepends=True)
    b.write_text(lines[0].replace("alice", "mallory") + lines[1])
    code, out, err = invoke("audit", "show", str(a), str(b), "--run", "r1")
    assert code == 1 and out == "" and err.startswith(f"{b}:2: hash chain broken") and "not merged" in err


def test_verbose_tracebacks_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import cli as cli_module

    def broken(self: object, given: object = ()) -> None:
        raise RuntimeError("could not reach postgresql://app:s3cr3t-in-trace@db/app")

    monkeypatch.setattr(cli_module._State, "load", broken)
    result = CliRunner().invoke(cli, ["--verbose", "list"])
    assert result.exit_code == 3 and "Traceback" in result.stderr
    assert "s3cr3t-in-trace" not in result.stderr + result.stdout


def test_param_file_keeps_values_off_the_command_line(tmp_path: Path) -> None:
    from agent.cli import _parse_params

    params = tmp_path / "params"
    params.write_text("# the DSN is secret\ndsn=postgresql://u:from-file@h/db\n\nqueue = email\n")
    assert _parse_params(["queue=override"], params) == {"dsn": "postgresql://u:from-file@h/db", "queue": "override"}
    params.write_text("no equals sign here\n")
    with pytest.raises(Exception, match=r"params:1: expected KEY=VALUE"):
        _parse_params([], params)


def test_runs_masks_secret_params_and_escapes_what_came_from_outside(tmp_path: Path) -> None:
    from agent.state import StateStore

    store = StateStore(tmp_path / "state.sqlite3")
    # As an older version stored it: a secret override in clear.
    store.add_run(
        run_id="r1", runbook="db-connection", target="-", mode="live", actor="me", params={"dsn": "rawsecretvalue"}
    )
    store.add_run(
        run_id="r2", runbook="app-down", target="-", mode="live", actor="alert:\x1b[2J\x1b[31mEvil\x07:fp", params={}
    )
    env = {"RUNBOOK_STATE_DIR": str(tmp_path), "RUNBOOK_DIR": str(REPO / "runbooks")}
    code, out, _ = invoke("runs", "--json", env=env)
    assert code == 0 and "rawsecretvalue" not in out
    assert {r["run_id"]: r["params"] for r in json.loads(out)}["r1"] == {"dsn": "***"}
    code, out, _ = invoke("runs", env=env)
    assert "\x1b" not in out and "\x07" not in out and "alert:\\x1b[2J\\x1b[31mEvil\\x07:fp" in out


def test_printable_escapes_controls_and_reordering() -> None:
    from agent.terminal import printable

    assert printable("ok\x1b]0;pwned\x07 \u202eevil\n") == "ok\\x1b]0;pwned\\x07 \\u202eevil\\x0a"
    assert printable("plain text, é, 🔴") == "plain text, é, 🔴"


def test_reading_commands_print_json(tmp_path: Path, write_runbook: Callable[[str, str], Path]) -> None:
    env = {"RUNBOOK_STATE_DIR": str(tmp_path / "state")}
    runbooks = str(REPO / "runbooks")
    code, out, _ = invoke("list", "--runbooks", runbooks, "--json", env=env)
    listed = json.loads(out)
    assert (
        code == 0
        and {"id": "db-connection", "severity": "SEV-1"}.items()
        <= next(r for r in listed if r["id"] == "db-connection").items()
    )
    code, out, _ = invoke("show", "db-connection", "--runbooks", runbooks, "--json", env=env)
    shown = json.loads(out)
    assert code == 0 and shown["checks"][0]["check"] == "postgres.query"
    assert shown["params"]["dsn"]["default"] == "***"  # a secret param's default, as the text shows it
    code, out, _ = invoke("show", "postgres.connections", "--runbooks", runbooks, "--json", env=env)
    plugin = json.loads(out)
    assert code == 0 and plugin["kind"] == "check" and "warn_pct" in plugin["params"]["properties"]
    code, out, _ = invoke("status", "--json", env=env)
    assert code == 0 and json.loads(out) == {
        "agents": [],
        "queue": {"queued": 0, "oldest": None},
        "paused": None,
        "breakers": [],
        "locks": [],
        "pending": [],
    }
    code, out, _ = invoke("validate", runbooks, "--json", env=env)
    assert code == 0 and json.loads(out)["valid"] is True
    text = (REPO / "runbooks" / "db-connection.yaml").read_text().replace("warn_pct: 80,", "warn_pct: lots,")
    bad = write_runbook("bad.yaml", text)
    code, out, _ = invoke("validate", str(bad), "--json", env=env)
    (error,) = json.loads(out)["errors"]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "warn_pct: lots" in t)
    assert code == 2 and error["file"] == str(bad) and error["line"] == line
    assert error["field"] == "checks[1].with.warn_pct" and "number" in error["message"], error
    code, out, _ = invoke("audit", "verify", str(tmp_path / "none.jsonl"), "--json", env=env)
    assert code == 1 and json.loads(out)["ok"] is False


def test_an_unreachable_shared_state_is_a_one_line_error_without_its_password(tmp_path: Path) -> None:
    env = {"RUNBOOK_STATE_DIR": str(tmp_path / "state"), "RUNBOOK_STATE_URL": "postgresql://a:hunter2-pw@127.0.0.1:1/s"}
    code, out, err = invoke("status", env=env)
    assert code == 3 and "state database:" in err and "hunter2" not in out + err and "Traceback" not in err
    env["RUNBOOK_STATE_URL"] = "mysql://a@b/c"
    code, _, err = invoke("status", env=env)
    assert code != 0 and "state_url must be a postgresql:// URL" in err


def test_approve_without_a_plan_shows_it_and_asks_or_else_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.state import StateStore

    store = StateStore(tmp_path / "state.sqlite3")
    store.add_run(run_id="r1", runbook="email-queue", target="-", mode="live", actor="t", params={})
    store.add_pending("r1", "pause_queue", "3f0c9a1e2b7d4c55", {"changes": [{"summary": "pause queue email"}]})
    store.close()
    env = {"RUNBOOK_STATE_DIR": str(tmp_path)}
    # Not at a terminal: nothing is asked, the plan must be named (exit 2, a usage error).
    code, _, err = invoke("approve", "r1", "--runbooks", str(REPO / "runbooks"), env=env)
    assert code == 2 and "--plan 3f0c9a1e2b7d4c55" in err
    # At a terminal: the plan is shown and asked about; "no" changes nothing.
    monkeypatch.setattr("agent.cli._at_a_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["approve", "r1", "--runbooks", str(REPO / "runbooks")], env=env, input="n\n")
    assert result.exit_code == 1 and "- pause queue email" in result.stdout and "not approved" in result.stderr
    assert StateStore(tmp_path / "state.sqlite3").pending("r1")  # still waiting
    # Secret params on stdin leave no answer to read there: the plan must be named.
    code, _, err = invoke("approve", "r1", "--param-file", "-", "--runbooks", str(REPO / "runbooks"), env=env)
    assert code == 2 and "--plan FINGERPRINT" in err
