"""What reaches a terminal: control characters in outside text (alert names, log lines) are shown as
escapes, never obeyed — an alertname holding ESC sequences must not rewrite the screen."""

from __future__ import annotations

import re

__all__ = ["APPROVE_PROMPT", "is_yes", "printable"]

# C0 and C1 controls, DEL, and the Unicode characters that reorder or break lines (bidi overrides,
# line and paragraph separators). A character class: linear in the text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """One line of text safe to print: every control character written as an escape (\\x1b, \\n...)."""
    return _CONTROL.sub(_escape, text)


# The y/N a person answers before a manual plan is applied: asked by the command itself (agent.output) or,
# for a run handed to the local daemon, by the command's light path (agent.cli), which imports no rich.
APPROVE_PROMPT = "Apply this plan? [y/N] "


def is_yes(answer: str) -> bool:
    return answer.strip().lower() in ("y", "yes")
