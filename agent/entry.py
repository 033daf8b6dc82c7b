"""The `runbook` command: a run the local daemon can do is handed to it before the command line's own
machinery (click, the settings' validation, the client libraries) is imported, because that import is
most of a cold command's time and the daemon has it all loaded already.

Only the plain forms are taken this way (`runbook run ID` with --dry-run, --json, -y/--yes, -p KEY=VALUE,
no config file): anything else, and any run the daemon declines, goes to agent.cli exactly as typed,
which then neither asks the daemon again nor differs in any message or exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _plain_run(argv: Sequence[str]) -> tuple[str, dict[str, str], dict[str, bool]] | None:
    """(runbook id, params, flags) when argv is a plain `run`, else None (the CLI parses it)."""
    if not argv or argv[0] != "run":
        return None
    runbook_id: str | None = None
    params: dict[str, str] = {}
    flags = {"dry_run": False, "as_json": False, "yes": False}
    args = iter(argv[1:])
    for arg in args:
        if arg == "--dry-run":
            flags["dry_run"] = True
        elif arg == "--json":
            flags["as_json"] = True
        elif arg in ("-y", "--yes"):
            flags["yes"] = True
        elif arg in ("-p", "--param"):
            item = next(args, None)
            if item is None or item.startswith("-"):
                return None
            key, sep, value = item.partition("=")
            if not sep or not key:
                return None  # the CLI's own message for a malformed --param
            params[key.strip()] = value
        elif arg.startswith("-") or runbook_id is not None:
            return None
        else:
            runbook_id = arg
    return None if runbook_id is None else (runbook_id, params, flags)


def _handed(argv: Sequence[str]) -> None:
    """Hand a plain run to the local daemon and exit with its outcome; return when the CLI must do it
    (the daemon's answer is then remembered for it: it never asks twice)."""
    if os.environ.get("RUNBOOK_NO_DAEMON") or os.environ.get("RUNBOOK_CONFIG"):
        return  # with a config file, where things are is the settings' to say
    plain = _plain_run(argv)
    if plain is None:
        return
    from pathlib import Path

    from agent import handoff
    from agent.paths import default_runbooks_dirs, default_state_dir, setting_from_env

    runbook_id, params, flags = plain
    policy = setting_from_env("policy_file")
    try:
        request = handoff.request_for(
            runbook_id,
            params,
            **flags,
            runbooks_dirs=default_runbooks_dirs(setting_from_env("runbooks_dir")),
            config_file=None,
            policy_file=Path(policy) if policy else None,
        )
    except OSError:
        return  # (a working directory gone, say): the CLI reports it in its own words
    state_dir = setting_from_env("state_dir")
    answered = handoff.answer(Path(state_dir) if state_dir else default_state_dir(), request)
    if not isinstance(answered, handoff.Handed):
        handoff.remember(request, answered)  # declined: run here; lost: the CLI reports it, exit 3
        return
    try:
        sys.stdout.write(answered.stdout)
        sys.stdout.flush()
        sys.stderr.write(answered.stderr)
    except BrokenPipeError:  # `runbook run ... | head`: as the CLI, nothing more to say to the reader
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(answered.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    _handed(args)
    from agent.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
