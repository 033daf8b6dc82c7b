"""Shell completion of the names `runbook` takes: runbook ids, check and remediation names, run ids and
incident ids (click's completion for bash, zsh and fish; see the README).

A completer runs on every <Tab>, before any command does: it reads what is there cheaply and never fails
(no completions rather than an error in the middle of a command line). It creates nothing: the state
database is opened read-only, and only if it exists."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.shell_completion import CompletionItem

__all__ = ["incident_ids", "names", "run_ids", "runbook_ids"]

_LIMIT = 200  # newest runs or incidents offered


def _quiet(func: Callable[[str], list[str]]) -> Callable[[Any, Any, str], list[CompletionItem]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[CompletionItem]:
        try:
            return [CompletionItem(value) for value in func(incomplete) if value.startswith(incomplete)]
        except Exception:  # a completion never breaks a command line: nothing offered instead
            return []

    return complete


def _state() -> Any:
    # The commands' own reading of the settings (environment, or the config file when one is named).
    from agent.cli import _State

    return _State(verbose=False, config=None)


def _runbook_ids() -> list[str]:
    # The `id:` line of each file, not a validation of it: this runs on every <Tab>.
    found = []
    for directory in _state().runbooks_dirs(()):
        files = [directory] if directory.is_file() else sorted(directory.glob("*.yaml"))
        for path in files:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.startswith("id:"):
                        found.append(line.partition(":")[2].split("#")[0].strip().strip("'\""))
                        break
    return found


def _state_rows(sql: str) -> list[str]:
    import sqlite3

    from agent.paths import setting_from_env

    if setting_from_env("state_url"):
        return []  # shared state: a <Tab> does not open a connection to a database server
    path = _state().state_dir / "state.sqlite3"
    if not path.is_file():
        return []
    # Read-only, and without creating anything: a read-only open of a WAL database still makes its -shm
    # and -wal files when they are missing (as this user: the daemon's user could then not write them).
    # With neither there, nothing is in a WAL to be read, so the file alone is the whole state.
    present = any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    uri = f"file:{path}?mode=ro" if present else f"file:{path}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as db:
        return [str(row[0]) for row in db.execute(sql, (_LIMIT,))]


def _plugin_names() -> list[str]:
    from agent.registry import Registry

    registry = Registry()
    return [*registry.check_names(), *registry.remediation_names()]


runbook_ids = _quiet(lambda incomplete: _runbook_ids())
# `show` takes a runbook id or a check/remediation name (those have a dot).
names = _quiet(lambda incomplete: _plugin_names() if "." in incomplete else [*_runbook_ids(), *_plugin_names()])
run_ids = _quiet(lambda incomplete: _state_rows("SELECT run_id FROM runs ORDER BY created DESC LIMIT ?"))
incident_ids = _quiet(lambda incomplete: _state_rows("SELECT id FROM incidents ORDER BY id DESC LIMIT ?"))
