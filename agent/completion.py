"""Shell completion of the names `runbook` takes: runbook ids, check and remediation names, run ids and
incident ids (click's completion for bash, zsh and fish; see the README).

A completer runs on every <Tab>, before any command does: it reads what is there cheaply and never fails
(no completions rather than an error in the middle of a command line). It creates nothing: the state
database is opened read-only, and only if it exists."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.shell_completion import CompletionItem

from agent.paths import default_state_dir

__all__ = ["incident_ids", "names", "run_ids", "runbook_ids"]

_PACKAGED_RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"
_LIMIT = 200  # newest runs or incidents offered


def _quiet(func: Callable[[str], list[str]]) -> Callable[[Any, Any, str], list[CompletionItem]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[CompletionItem]:
        try:
            return [CompletionItem(value) for value in func(incomplete) if value.startswith(incomplete)]
        except Exception:
            return []

    return complete


def _setting(env: str, field: str) -> str | None:
    """A setting as the commands read it: the environment, or the config file when one is named."""
    if os.environ.get("RUNBOOK_CONFIG"):
        from agent.config import load_settings

        value = getattr(load_settings(None), field)
        return str(value) if value else None
    return os.environ.get(env) or None


def _runbook_dirs() -> list[Path]:
    configured = _setting("RUNBOOK_DIR", "runbooks_dir")
    if configured:
        return [Path(configured)]
    local = Path("runbooks")
    return [local if local.is_dir() else _PACKAGED_RUNBOOKS]


def _runbook_ids() -> list[str]:
    # The `id:` line of each file, not a validation of it: this runs on every <Tab>.
    found = []
    for directory in _runbook_dirs():
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

    configured = _setting("RUNBOOK_STATE_DIR", "state_dir")
    path = (Path(configured) if configured else default_state_dir()) / "state.sqlite3"
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
