"""Loads runbook YAML and validates all of it up front; every problem is `file:line: field: reason`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.exceptions import RunbookValidationError
from agent.inventory import HostError, select
from agent.registry import Registry, UnknownPlugin
from agent.schema import Runbook
from agent.sources import Loc, Problems, YamlSource, reason
from agent.templating import TemplateError, Templates, is_template

__all__ = ["LoadedRunbook", "RunbookSet", "load_runbooks"]


@dataclass(frozen=True)
class LoadedRunbook:
    spec: Runbook
    path: Path


@dataclass(frozen=True)
class RunbookSet:
    runbooks: dict[str, LoadedRunbook]
    templates: Templates
    registry: Registry
    digest: str = ""  # of the files as loaded (see `digest`): tells whether they changed since

    def ids(self) -> list[str]:
        return sorted(self.runbooks)


def _validate_with(
    source: YamlSource, problems: Problems, model: type[BaseModel], values: dict[str, Any], loc: Loc
) -> None:
    """Check a step's `with` against the plugin's params model. Templated values are only known at run
    time, so their type errors are left to the run; unknown and missing keys are caught now."""
    try:
        model.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            key = error["loc"][0] if error["loc"] else None
            if key in values and is_template(values[key]):
                continue
            if key is None and any(is_template(v) for v in values.values()):
                continue  # a whole-model rule over values not known until the run
            problems.add(source, loc + tuple(error["loc"]), reason(error))


def _walk_templates(value: Any, loc: Loc) -> Iterable[tuple[Loc, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_templates(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_templates(item, (*loc, index))
    elif is_template(value):
        yield loc, value


def _check_runbook(
    source: YamlSource,
    spec: Runbook,
    registry: Registry,
    templates: Templates,
    problems: Problems,
    env: Sequence[str] | None,
    inventory: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    params = list(spec.params)
    check_ids = [c.id for c in spec.checks]

    def template(loc: Loc, text: str, allowed: dict[str, Any], expression: bool = False) -> None:
        try:
            templates.check(text, expression=expression, allowed=allowed)
        except TemplateError as exc:
            problems.add(source, loc, str(exc))

    def on_host(selectors: list[str] | None) -> dict[str, Any]:
        # A step with hosts sees the engine it runs on as `host` (its name and labels).
        return {"host": ["name", "labels"]} if selectors else {}

    fanned = [c.id for c in spec.checks if c.hosts]

    def hosts(loc: Loc, selectors: list[str] | None, *, remediation: bool, plugin: str) -> None:
        if selectors and not plugin.startswith("docker."):
            # The engine is what `hosts:` picks: a check of a database, a URL or this machine (or a Swarm
            # change, which the whole cluster sees) would run, or be applied, once per engine for nothing.
            problems.add(source, (*loc, "hosts"), f"hosts: is for docker.* steps; {plugin} does not run on an engine")
            return
        for j, selector in enumerate(selectors or []):
            if is_template(selector):
                template((*loc, "hosts", j), selector, {"params": params, "env": env, "config": None})
            elif inventory is not None and not selector.startswith("failing:"):
                # A name or a label is known now: one the inventory lacks is this file's error, not a
                # failure of every run that reaches the step.
                try:
                    select(inventory, [selector], templates=templates, context={})
                except HostError as exc:
                    problems.add(source, (*loc, "hosts", j), str(exc).removeprefix("hosts: "))
            elif selector.startswith("failing:"):
                if not remediation:
                    problems.add(source, (*loc, "hosts", j), "failing:CHECK is for remediations")
                elif selector.removeprefix("failing:") not in fanned:
                    problems.add(
                        source,
                        (*loc, "hosts", j),
                        f"{selector.removeprefix('failing:')!r} is not a check with hosts"
                        " (failing: reads its results per engine)",
                    )

    for name, param in spec.params.items():
        for ploc, text in _walk_templates(param.default, ("params", name)):
            template(ploc, text, {"env": env, "config": None})

    seen: set[str] = set()
    loc: Loc
    for i, step in enumerate(spec.checks):
        loc = ("checks", i)
        if step.id in seen:
            problems.add(source, (*loc, "id"), f"duplicate check id {step.id!r}")
        seen.add(step.id)
        for j, need in enumerate(step.needs):
            if need not in check_ids or check_ids.index(need) >= i:
                problems.add(source, (*loc, "needs", j), f"{need!r} is not a check defined before this one")
        try:
            plugin = registry.check(step.check)
        except UnknownPlugin as exc:
            problems.add(source, (*loc, "check"), str(exc))
        else:
            _validate_with(source, problems, plugin.params, step.with_, (*loc, "with"))
        hosts(loc, step.hosts, remediation=False, plugin=step.check)
        for tloc, text in _walk_templates(step.with_, (*loc, "with")):
            template(tloc, text, {"params": params, "env": env, "config": None, **on_host(step.hosts)})

    seen = set()
    for i, rem in enumerate(spec.remediations):
        loc = ("remediations", i)
        if rem.id in seen:
            problems.add(source, (*loc, "id"), f"duplicate remediation id {rem.id!r}")
        seen.add(rem.id)
        try:
            plugin_r = registry.remediation(rem.do)
        except UnknownPlugin as exc:
            problems.add(source, (*loc, "do"), str(exc))
        else:
            _validate_with(source, problems, plugin_r.params, rem.with_, (*loc, "with"))
        hosts(loc, rem.hosts, remediation=True, plugin=rem.do)
        for tloc, text in _walk_templates(rem.with_, (*loc, "with")):
            template(tloc, text, {"params": params, "env": env, "config": None, **on_host(rem.hosts)})
        if rem.when is not None:
            template((*loc, "when"), rem.when, {"checks": check_ids, "params": params}, expression=True)
        for j, verify in enumerate(rem.verify):
            if verify not in check_ids:
                problems.add(source, (*loc, "verify", j), f"unknown check {verify!r}")


def digest(paths: Sequence[Path]) -> str:
    """A digest of the runbook files under `paths` (names and contents), cheap enough to take per request."""
    hasher = hashlib.sha256()
    for path in _files(paths):
        try:
            data = path.read_bytes()
        except OSError:
            data = b"\0unreadable"
        hasher.update(str(path.resolve()).encode() + b"\0" + hashlib.sha256(data).digest())
    return hasher.hexdigest()


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


def load_runbooks(
    paths: Sequence[Path],
    registry: Registry | None = None,
    *,
    template_env: Sequence[str] | None = None,
    inventory: Mapping[str, Mapping[str, str]] | None = None,
) -> RunbookSet:
    """Load and validate every runbook under `paths`; raise with all problems found, not just the first.
    `template_env` names the environment variables templates may read (`env.NAME`); None: any.
    `inventory` (each engine's name and labels, from the settings) checks the engines `hosts:` names;
    None: not checked here (they are when a run reaches the step)."""
    registry = registry or Registry()
    templates = Templates()
    problems = Problems()
    runbooks: dict[str, LoadedRunbook] = {}
    files = _files(paths)
    loaded_digest = digest(paths)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.note(path, 1, "(file)", f"cannot read: {exc}")
            continue
        try:
            source = YamlSource(path, text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            what = getattr(exc, "problem", None) or str(exc)
            problems.note(path, line, "(yaml)", f"not valid YAML: {what}")
            continue
        if not isinstance(source.data, dict):
            problems.add(source, (), "expected a mapping with id, title, severity and checks")
            continue
        if source.duplicates:
            source.add_duplicates(problems)
            continue
        try:
            spec = Runbook.model_validate(source.data)
        except ValidationError as exc:
            problems.from_validation(source, exc)
            continue
        _check_runbook(source, spec, registry, templates, problems, template_env, inventory)
        if spec.id in runbooks:
            problems.add(source, ("id",), f"duplicate runbook id {spec.id!r} (also in {runbooks[spec.id].path})")
            continue
        runbooks[spec.id] = LoadedRunbook(spec, path)
    if not files and not problems.found:
        problems.note(", ".join(map(str, paths)), None, None, "no runbook files (*.yaml) found")
    if problems.found:
        raise RunbookValidationError(problems.found)
    return RunbookSet(runbooks, templates, registry, loaded_digest)
