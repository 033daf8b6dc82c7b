"""Regular expressions that run over outside text (alert labels, log lines): RE2, linear in the input.

Python's `re` backtracks, so a pattern like `(a+)+b` takes exponential time on a hostile label or log
line. RE2 guarantees time linear in the input whatever the pattern; it is also the syntax Alertmanager's
own matchers use (Go's regexp). What it lacks (lookaround, backreferences) is refused at load with a
clear message."""

from __future__ import annotations

import functools
from typing import Any, Protocol

__all__ = ["LinearBytesPattern", "LinearPattern", "PatternError", "compile_linear", "compile_linear_bytes"]


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

    try:
        compiled: LinearPattern = re2.compile(pattern, _options(ignore_case))
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"invalid regex {pattern!r}: {reason} (RE2 syntax, as Alertmanager: no lookaround or backreferences)"
        ) from None
    return compiled


class LinearBytesPattern:
    """A pattern over log lines as UTF-8 bytes: the same RE2 program (RE2 matches UTF-8 bytes either
    way), without what the `re2` module's wrapper does in Python for every call — encoding a `str`,
    mapping byte offsets back to characters, a generator and a match object. For a window of thousands
    of log lines that was most of a check's time. The wrapper's own `search` is the fallback if the
    binding it sits on changes."""

    def __init__(self, compiled: Any) -> None:
        import re2

        self._compiled = compiled
        self.groupindex: dict[str, int] = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in compiled.groupindex.items()
        }
        self._groups = int(compiled.groups)
        try:
            self._match = compiled._regexp.Match
            self._anchor = re2._re2.RE2.Anchor.UNANCHORED
        except AttributeError:
            self._match = None

    def spans(self, line: bytes) -> list[tuple[int, int]] | None:
        """None if `line` has no match; else the spans of the match and of each group ((-1, -1) for a
        group that took no part), in bytes."""
        if self._match is not None:
            found: list[tuple[int, int]] = self._match(self._anchor, line, 0, len(line))
            return None if found[0][0] == -1 else found
        match = self._compiled.search(line)
        return None if match is None else [match.span(i) for i in range(self._groups + 1)]


@functools.lru_cache(maxsize=256)
def compile_linear_bytes(pattern: str, *, ignore_case: bool = False) -> LinearBytesPattern:
    """`pattern` for UTF-8 bytes (see LinearBytesPattern). The `str` form is compiled first: that is
    where a bad pattern gets its message."""
    import re2

    compile_linear(pattern, ignore_case=ignore_case)
    return LinearBytesPattern(re2.compile(pattern.encode(), _options(ignore_case)))


def _options(ignore_case: bool) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.case_sensitive = not ignore_case
    return options
