"""Regular expressions that run over outside text (alert labels, log lines): RE2, linear in the input.

Python's `re` backtracks, so a pattern like `(a+)+b` takes exponential time on a hostile label or log
line. RE2 guarantees time linear in the input whatever the pattern; it is also the syntax Alertmanager's
own matchers use (Go's regexp). What it lacks (lookaround, backreferences) is refused at load with a
clear message."""

from __future__ import annotations

import functools
from typing import Any, Protocol

__all__ = ["LinearPattern", "PatternError", "compile_linear"]


class PatternError(ValueError):
    """A pattern RE2 cannot compile."""


class LinearPattern(Protocol):
    pattern: str
    groupindex: dict[str, int]

    def search(self, text: str) -> Any: ...

    def fullmatch(self, text: str) -> Any: ...


@functools.lru_cache(maxsize=1024)
def compile_linear(pattern: str, *, ignore_case: bool = False) -> LinearPattern:
    """Compile once (cached): triggers are matched for every alert, log patterns for every line."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.case_sensitive = not ignore_case
    try:
        compiled: LinearPattern = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"invalid regex {pattern!r}: {reason} (RE2 syntax, as Alertmanager: no lookaround or backreferences)"
        ) from None
    return compiled
