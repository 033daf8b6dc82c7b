"""How every CLI command fails: one redacted line with its exit code; tracebacks (redacted too) only with
--verbose. Shared by the command modules (agent.cli, agent.cli_incidents)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from agent.exceptions import RunbookError

__all__ = ["errors_as_one_line"]

F = TypeVar("F", bound=Callable[..., Any])


def errors_as_one_line(func: F) -> F:
    """Print a RunbookError as one redacted line with its exit code; anything else as an internal error
    (exit 3). The command's state object (`ctx.obj`) knows the redactor and --verbose."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().find_root().obj
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except BrokenPipeError:
            # The reader went away (`runbook incident list | head`): nothing more to say to it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except RunbookError as exc:
            _traceback(state)
            for line in exc.message.splitlines():
                state.echo(line, err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            _traceback(state)
            state.echo(f"runbook: internal error: {type(exc).__name__}: {exc}", err=True)
            if not state.verbose:
                click.echo("run again with --verbose for the traceback", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


def _traceback(state: Any) -> None:
    if state.verbose:
        import traceback

        for line in traceback.format_exc().splitlines():
            state.echo(line, err=True)
