"""`runbook schema`: the runbook format as a JSON Schema (draft 2020-12), for yaml-language-server and the
editors built on it, which validate and complete runbooks as they are typed.

Built from the same pydantic models that validate a runbook (agent.schema), with what those models
cannot say on their own: each step's `with:` typed by its `check:` or `do:` name, from the registry's
params models and their descriptions (an if/then per name: editors then report a wrong param under the
step that has it), and every such value also allowed to be a template (`'{{ params.dsn }}'`), because
templates are rendered when the run starts. What only code can check (a `when:` expression, an RE2
pattern's syntax, alert_params naming declared params) is still `runbook validate`'s. The schema is a
little stricter than the loader in two places, on purpose: a number written as a quoted string
(`warn_pct: "80"`, which pydantic's lax mode takes) and spaces inside a duration (`1 0s`) are flagged.
"""

from __future__ import annotations

import copy
from typing import Any

from agent.registry import Registry
from agent.schema import Runbook

__all__ = ["DIALECT", "runbook_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A value rendered when the run starts: any param may be given as one.
TEMPLATE: dict[str, Any] = {
    "type": "string",
    "pattern": r"\{\{|\{%",
    "description": "A template over params, config and env, rendered when the run starts.",
}


def runbook_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a runbook file, with every check and remediation the registry knows."""
    registry = registry or Registry()
    schema = Runbook.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    # A param is a ParamSpec or its default written alone (agent.schema's shorthand); an object default
    # must be written in full, `{default: {...}}`, or a typo in `secret:` would pass as a default.
    params = schema["properties"]["params"]["patternProperties"]
    for name_pattern, spec in params.items():
        params[name_pattern] = {
            "anyOf": [spec, {"not": {"type": "object"}}],
            "description": "A param: {default, secret, description}, or its default alone.",
        }
    # A trigger with a `matchers` key is always that form (agent.schema._trigger_kind), never labels.
    labels_form = schema["properties"]["triggers"]["items"]["oneOf"][0]
    labels_form["propertyNames"] = {"not": {"const": "matchers"}}
    checks = {n: (registry.check(n).params, registry.check(n).doc) for n in registry.check_names()}
    _typed_with(defs, "CheckStep", "check", checks)
    _typed_with(
        defs,
        "RemediationStep",
        "do",
        {n: (registry.remediation(n).params, registry.remediation(n).doc) for n in registry.remediation_names()},
    )
    return {
        "$schema": DIALECT,
        "title": "runbook",
        "description": "An executable runbook (runbook.yaml): `runbook schema` writes this file.",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _typed_with(defs: dict[str, Any], step: str, key: str, plugins: dict[str, tuple[type[Any], str]]) -> None:
    """`with:` of a step typed by its `key` (check/do): the names as an enum, one if/then per name."""
    properties = defs[step]["properties"]
    properties[key] = {
        "enum": sorted(plugins),
        "description": f"The {'check' if key == 'check' else 'remediation'} (`runbook show NAME` describes it).",
    }
    rules = []
    for name, (params, doc) in sorted(plugins.items()):
        prefix = f"{key}.{name}."
        params_schema = params.model_json_schema(by_alias=True, ref_template=f"#/$defs/{prefix}{{model}}")
        for def_name, definition in params_schema.pop("$defs", {}).items():
            defs[prefix + def_name] = definition
        params_schema["description"] = doc
        params_schema.pop("title", None)
        params_schema["properties"] = {p: _or_template(s) for p, s in params_schema.get("properties", {}).items()}
        defs[f"{key}.{name}"] = params_schema
        then: dict[str, Any] = {"properties": {"with": {"$ref": f"#/$defs/{key}.{name}"}}}
        if params_schema.get("required"):
            then["required"] = ["with"]
        rules.append({"if": {"properties": {key: {"const": name}}, "required": [key]}, "then": then})
    defs[step]["allOf"] = rules


def _or_template(schema: dict[str, Any]) -> dict[str, Any]:
    """A param's schema, or a template; its description and default kept where editors show them."""
    inner = copy.deepcopy(schema)
    outer: dict[str, Any] = {k: inner.pop(k) for k in ("title", "description", "default") if k in inner}
    outer.pop("title", None)
    return {**outer, "anyOf": [inner, TEMPLATE]}
