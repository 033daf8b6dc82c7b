"""`runbook run --nagios`: a Nagios/Icinga plugin's output, its performance data read back by Icinga 2's
own parser (`parse_performance_data`, from Debian's icinga2-bin; no Icinga daemon needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import cli

pytestmark = pytest.mark.integration

# Our unit -> (Icinga's unit, the factor Icinga normalises by: it reads ms as seconds).
ICINGA_UNITS = {"%": ("percent", 1), "s": ("seconds", 1), "ms": ("seconds", 1000), "B": ("bytes", 1), "": ("", 1)}
UNITS = (("_pct", "%"), ("_ms", "ms"), ("_s", "s"), ("_bytes", "B"))


def icinga_parse(perfdata: str) -> list[dict[str, Any]]:
    """Each item of a perfdata string as Icinga 2 parses it (an invalid item fails the whole call)."""
    icinga2 = shutil.which("icinga2")
    assert icinga2, "icinga2-bin is installed by sandbox/ensure-deps.sh"
    items = re.findall(r"(?:'[^']*'|[^\s'])+", perfdata)
    expression = "[" + ", ".join(f"parse_performance_data({json.dumps(item)})" for item in items) + "]"
    result = subprocess.run([icinga2, "console", "-e", expression], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(parsed) == len(items)
    return parsed


def plugin_output(env: dict[str, str], *args: str) -> tuple[int, str, list[str], dict[str, Any]]:
    """(exit code, first line's text, long output lines, the same run's JSON document)."""
    result = cli(env, "run", *args, "--nagios")
    first, *rest = result.stdout.rstrip("\n").split("\n")
    document = json.loads(cli(env, "run", *args, "--json").stdout)
    return result.returncode, first, rest, document


def test_a_healthy_run_is_an_ok_plugin_output_with_perfdata_icinga_reads(agent_env: dict[str, str]) -> None:
    code, first, rest, document = plugin_output(agent_env, "db-connection", "--dry-run")
    assert code == 0
    text, _, perfdata = first.partition(" | ")
    assert text == "DB-CONNECTION OK - all 7 checks OK"
    assert [line.split("]")[0] for line in rest] == ["[OK"] * 7
    assert rest[1].startswith("[OK] pool (postgres.connections): ")
    parsed = {p["label"]: p for p in icinga_parse(perfdata)}
    # Every metric of every check, with the unit its name says and the levels it was judged against.
    expected = {
        (c["id"] if m == c["id"] else f"{c['id']}_{m}"): (c, m) for c in document["checks"] for m in c["metrics"]
    }
    assert set(parsed) == set(expected)
    pool = parsed["pool_used_pct"]
    assert (pool["unit"], pool["warn"], pool["crit"], pool["min"], pool["max"]) == ("percent", 80, 90, 0, 100)
    latency = document["checks"][5]["metrics"]["latency_ms"]  # (another run's, so about the same)
    assert parsed["app_health_latency_ms"]["unit"] == "seconds" and parsed["app_health_latency_ms"]["crit"] == 5
    assert 0 < parsed["app_health_latency_ms"]["value"] < 1 and 0 < latency < 1000
    assert (parsed["idle_in_transaction"]["warn"], parsed["idle_in_transaction"]["crit"]) == (1, 5)
    for label, (check, metric) in expected.items():
        unit, factor = ICINGA_UNITS[next((u for suffix, u in UNITS if metric.endswith(suffix)), "")]
        assert parsed[label]["unit"] == unit, label
        levels = [None if v is None else v / factor for v in check["thresholds"].get(metric, [None, None])]
        assert [parsed[label]["warn"], parsed[label]["crit"]] == pytest.approx(levels), label


def test_a_warning_names_the_check_and_exits_1(agent_env: dict[str, str], tmp_path: Path) -> None:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "pool.yaml").write_text(
        "id: pool\ntitle: Pool | usage\nseverity: SEV-3\nchecks:\n"
        "  - {id: pool, check: postgres.connections,"
        " with: {dsn: '{{ config.database_url }}', warn_pct: 0.5, crit_pct: 99}}\n"
        "  - {id: reachable, check: postgres.query, with: {dsn: '{{ config.database_url }}', sql: 'SELECT 1'}}\n"
    )
    code, first, rest, _ = plugin_output(agent_env, "pool", "--dry-run", "--runbooks", str(runbooks))
    assert code == 1, first
    text, _, perfdata = first.partition(" | ")
    assert re.fullmatch(r"POOL WARNING - pool: \d+ of \d+ connections in use \(\d+%\)", text), text
    assert "|" not in text and "|" not in "".join(rest)
    parsed = {p["label"]: p for p in icinga_parse(perfdata)}
    assert (parsed["pool_used_pct"]["warn"], parsed["pool_used_pct"]["crit"]) == (0.5, 99)
    assert rest[0].startswith("[WARNING] pool (postgres.connections): ")


def test_an_error_is_an_unknown_plugin_output_on_stdout(agent_env: dict[str, str]) -> None:
    result = cli(agent_env, "run", "no-such-runbook", "--nagios")
    assert result.returncode == 3
    assert result.stdout.startswith("NO-SUCH-RUNBOOK UNKNOWN - unknown runbook 'no-such-runbook'")
    both = cli(agent_env, "run", "db-connection", "--nagios", "--json")
    assert both.returncode == 3 and "choose one" in both.stderr
