"""Text from outside (alert labels, check summaries, log lines) made inert for each kind of channel: it
must not ping anyone (`<!channel>`, `@here`), render as a link (`<url|text>`, `[text](url)`, a bare URL) or
carry control characters. Only the values put into a message are escaped, never the template around them."""

from __future__ import annotations

import re

from agent.terminal import printable

__all__ = ["for_chat", "for_email", "for_terminal"]

# Linear patterns (character classes and literals only).
_URL_SCHEME = re.compile(r"(?i)\b(http|https|ftp)(://)")
_WWW = re.compile(r"(?i)\bwww\.")
_MENTION = re.compile(r"@")
# A dot between a letter or digit and a letter: `evil.example.com`, `bob@evil.com`, which mail clients turn
# into links by themselves. One-character lookarounds: constant work per position, linear.
_DOMAIN_DOT = re.compile(r"(?<=[A-Za-z0-9])\.(?=[A-Za-z])")


def _defang(text: str) -> str:
    """A URL a mail client or chat cannot turn into a link: hxxps://, www[.]"""
    text = _URL_SCHEME.sub(lambda m: m.group(1).replace("t", "x", 2).replace("T", "X", 2) + m.group(2), text)
    return _WWW.sub(lambda m: m.group(0)[:3] + "[.]", text)


def for_terminal(text: object) -> str:
    return printable(str(text))


def for_email(text: object) -> str:
    """Plain text mail: no controls, no links (mail clients link bare domains and addresses too)."""
    return _DOMAIN_DOT.sub("[.]", _defang(printable(str(text))))


def for_chat(text: object) -> str:
    """Slack, Mattermost, Discord: no angle brackets (Slack's `<!channel>` and `<url|text>` need them; they
    become U+2039 and U+203A rather than entities the other two would show raw), mentions broken by a zero-width space,
    links defanged, and the whole value in a code span (no Markdown, no autolink, no mention inside)."""
    value = _defang(printable(str(text)))
    value = value.replace("<", "\u2039").replace(">", "\u203a").replace("`", "'")
    value = _MENTION.sub("@\u200b", value)
    return f"`{value}`" if value else "``"
