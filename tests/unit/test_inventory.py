"""Which engines a step's `hosts:` selects: names, `all`, labels, the hosts where a check failed, and a
template that may only ever name one engine of the inventory (so an alert never widens the selection)."""

from __future__ import annotations

import pytest

from agent.inventory import HostError, select, valid_selector
from agent.templating import Templates

ENGINES = {"web-1": {"role": "web"}, "web-2": {"role": "web"}, "db-1": {"role": "db"}}


def pick(*selectors: str, **context: object) -> list[str]:
    return select(
        ENGINES,
        list(selectors),
        templates=Templates(),
        context={"params": context},
        failing=lambda check: ["web-2", "nowhere"] if check == "app" else [],
    )


def test_names_all_labels_and_failing_hosts_in_inventory_order() -> None:
    assert pick("db-1", "web-1") == ["web-1", "db-1"]
    assert pick("all") == ["web-1", "web-2", "db-1"]
    assert pick("role=web") == ["web-1", "web-2"]
    assert pick("failing:app") == ["web-2"]  # never a host the inventory does not name
    assert pick("failing:other") == []
    assert pick("web-1", "role=web", "web-1") == ["web-1", "web-2"]


@pytest.mark.parametrize(
    ("selectors", "context", "why"),
    [
        (["web-9"], {}, "no engine named 'web-9'"),
        (["role=cache"], {}, "no engine of the inventory has the label role=cache"),
        # From a template, perhaps an alert's: one engine by its exact name, nothing wider.
        (["{{ params.host }}"], {"host": "all"}, "'all' is not an engine of the inventory"),
        (["{{ params.host }}"], {"host": "role=web"}, "is not an engine"),
        (["{{ params.host }}"], {"host": "web-1 "}, "is not an engine"),
        (["{{ params.host }}"], {"host": ["web-1", "web-2"]}, "is not an engine"),
        (["{{ params.nothing }}"], {}, "hosts: cannot evaluate"),
    ],
)
def test_what_selects_nothing_it_may_is_refused(selectors: list[str], context: dict[str, object], why: str) -> None:
    with pytest.raises(HostError, match=why):
        pick(*selectors, **context)


def test_a_template_naming_one_engine_selects_it() -> None:
    assert pick("{{ params.host }}", host="web-2") == ["web-2"]


def test_hosts_without_an_inventory_is_an_error() -> None:
    with pytest.raises(HostError, match="no `engines` inventory"):
        select({}, ["all"], templates=Templates(), context={})


def test_failing_is_for_remediations() -> None:
    with pytest.raises(HostError, match="for remediations"):
        select(ENGINES, ["failing:app"], templates=Templates(), context={})


@pytest.mark.parametrize(
    ("selector", "ok"),
    [
        ("web-1", True),
        ("all", True),
        ("role=web", True),
        ("failing:app", True),
        ("{{ params.host }}", True),
        ("Web 1", False),
        ("role=web=x", False),
        ("a" * 64, False),
    ],
)
def test_the_schema_knows_a_selector(selector: str, ok: bool) -> None:
    assert valid_selector(selector) is ok
