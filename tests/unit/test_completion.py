"""Shell completion (click's, as bash, zsh and fish call it): runbook ids, check and remediation names,
run ids and incident ids — and nothing created or broken where there is no state yet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from agent.state import StateStore

REPO = Path(__file__).resolve().parents[2]


def complete(words: str, env: dict[str, str], shell: str = "bash") -> list[str]:
    """What `runbook` offers for the last word of `words`, as the shell's completion script asks it."""
    variables = {
        **os.environ,
        **env,
        "_RUNBOOK_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": words,
        # bash and zsh give the index of the word being completed; fish gives the word itself.
        "COMP_CWORD": (
            ("" if words.endswith(" ") else words.split()[-1])
            if shell == "fish"
            else str(len(words.split()) - (0 if words.endswith(" ") else 1))
        ),
    }
    code = "from agent.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=variables, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    values = []
    for line in result.stdout.splitlines():
        kind, _, value = line.partition(",")
        if kind == "plain":
            values.append(value)
    return values


def test_runbook_ids_and_names(tmp_path: Path) -> None:
    env = {"RUNBOOK_STATE_DIR": str(tmp_path / "state")}
    assert complete("runbook run d", env) == ["db-connection"]
    assert set(complete("runbook run ", env)) >= {"app-down", "db-connection", "email-queue"}
    assert complete("runbook show postgres.c", env) == ["postgres.connections"]
    shown = complete("runbook show d", env)
    assert "db-connection" in shown and "docker.restart" in shown and "docker.container" in shown
    assert not (tmp_path / "state").exists()  # completing creates no state directory


def test_run_and_incident_ids_from_the_state_store(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = {"RUNBOOK_STATE_DIR": str(state_dir)}
    assert complete("runbook approve ", env) == []  # no state yet: nothing offered, no error
    store = StateStore(state_dir / "state.sqlite3")
    for run_id in ("aaa111", "aab222", "bbb333"):
        store.add_run(run_id=run_id, runbook="db-connection", target="-", mode="dry-run", actor="t", params={})
    store.close()
    for leftover in ("-wal", "-shm"):
        Path(f"{state_dir / 'state.sqlite3'}{leftover}").unlink(missing_ok=True)
    assert complete("runbook approve aa", env) == ["aab222", "aaa111"]  # newest first
    # Read without creating the WAL files a read-only open would make (owned by whoever pressed Tab).
    assert sorted(p.name for p in state_dir.iterdir() if p.name.startswith("state.sqlite3")) == ["state.sqlite3"]
    assert complete("runbook audit show --run b", env) == ["bbb333"]
    opened = CliRunner().invoke(
        cli,
        ["incident", "open", "--severity", "SEV-3", "--title", "Login slow", "--impact", "some users"],
        env=env,
        catch_exceptions=False,
    )
    assert opened.exit_code == 0, opened.output
    assert complete("runbook incident ack ", env) == ["1"]
    assert complete("runbook incident ack ", env, shell="fish") == ["1"]
    assert complete("runbook postmortem ", env) == ["1"]
