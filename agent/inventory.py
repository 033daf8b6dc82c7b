"""The inventory: the Docker engines one agent reaches (`engines` in the config), and which of them a
runbook step's `hosts:` selects.

A step runs on the default engine (`docker_host`) unless it names hosts. A selector is an engine's name,
`all`, a label (`role=web`), `failing:CHECK` (the hosts where that check's result is not OK; for a
remediation), or a template that renders to one engine's name (`{{ params.host }}`): something an alert
chose reaches only an engine the inventory names, never `all` or a label, and only through a param the
runbook constrains."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the schema imports this module: no jinja2 for it
    from agent.templating import Templates

__all__ = ["ALL", "ENGINE_NAME", "HostError", "host_view", "select"]

ALL = "all"
# An engine's name: what a result is suffixed with (`app@web-2`) and a lock's target carries.
ENGINE_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"  # and never `all`
_NAME = re.compile(ENGINE_NAME)
_LABEL = re.compile(r"^([A-Za-z0-9_.-]{1,63})=([A-Za-z0-9_.-]{0,63})$")
_FAILING = re.compile(r"^failing:([a-z][a-z0-9_-]{0,62})$")


class HostError(ValueError):
    """A selector that selects nothing it may: an unknown engine, a template naming more than one."""


def host_view(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """What templates see as `host` in a step that runs on an engine of the inventory."""
    return {"name": name, "labels": dict(labels)}


def select(
    engines: Mapping[str, Mapping[str, str]],
    selectors: Sequence[str],
    *,
    templates: Templates,
    context: Mapping[str, Any],
    failing: Callable[[str], list[str]] | None = None,
) -> list[str]:
    """The engines `selectors` name, in the inventory's order, each once. `engines` maps each name to its
    labels; `failing(check)` gives the hosts where a check is not OK (remediations only)."""
    from agent.templating import TemplateError

    if not engines:
        raise HostError("hosts: the config has no `engines` inventory to choose from")
    chosen: set[str] = set()
    for selector in selectors:
        if is_template(selector):
            try:
                value = templates.render(selector, context)
            except TemplateError as exc:
                raise HostError(f"hosts: {exc}") from None
            # From a template (a param, so perhaps an alert): one engine, by its exact name.
            if not isinstance(value, str) or value not in engines:
                raise HostError(f"hosts: {str(value)[:80]!r} is not an engine of the inventory")
            chosen.add(value)
        elif selector == ALL:
            chosen.update(engines)
        elif (label := _LABEL.match(selector)) is not None:
            key, wanted = label.groups()
            found = [name for name, labels in engines.items() if labels.get(key) == wanted]
            if not found:
                raise HostError(f"hosts: no engine of the inventory has the label {selector}")
            chosen.update(found)
        elif (check := _FAILING.match(selector)) is not None:
            if failing is None:
                raise HostError(f"hosts: {selector} is for remediations (a check has no results to read)")
            chosen.update(name for name in failing(check.group(1)) if name in engines)
        elif selector in engines:
            chosen.add(selector)
        else:
            raise HostError(f"hosts: no engine named {selector!r} in the inventory")
    return [name for name in engines if name in chosen]


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def valid_selector(selector: str) -> bool:
    """What the runbook schema accepts as one selector (a template is checked when it is rendered)."""
    return bool(
        is_template(selector)
        or selector == ALL
        or _LABEL.match(selector)
        or _FAILING.match(selector)
        or (_NAME.match(selector) and selector != ALL)
    )
