"""Runbook templates and `when:` expressions: compiled once at load in jinja2's immutable sandbox."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TemplateError", "Templates", "is_template"]

_WHOLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}).)*)\}\}$", re.DOTALL)


class TemplateError(Exception):
    """A template that does not compile, names something unknown, or fails to render."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Templates:
    """Compiles and caches templates; only runbook text is ever compiled, never alert data."""

    def __init__(self) -> None:
        self.env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._cache: dict[tuple[str, str], Any] = {}

    def _compile(self, source: str, kind: str) -> Any:
        key = (kind, source)
        if key not in self._cache:
            if kind == "expression":
                self._cache[key] = self.env.compile_expression(source, undefined_to_none=False)
            else:
                self._cache[key] = self.env.from_string(source)
        return self._cache[key]

    def check(self, source: str, *, expression: bool, allowed: Mapping[str, Iterable[str] | None]) -> None:
        """Compile `source` and check every name it uses: roots in `allowed`, and for roots with a
        list of members, `root.member` must be one of them (a typo in a param or check id)."""
        try:
            if expression:
                ast = self.env.parse(f"{{{{ ({source}) }}}}")
                self._compile(source, "expression")
            else:
                ast = self.env.parse(source)
                self._compile(source, "template")
                match = _WHOLE_EXPRESSION.match(source)
                if match:
                    self._compile(match.group("expr"), "expression")
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}") from None
        for name in sorted(meta.find_undeclared_variables(ast)):
            if name not in allowed:
                raise TemplateError(f"unknown name {name!r} (available: {', '.join(sorted(allowed))})")
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name in allowed:
                members = allowed[node.node.name]
                if members is not None and node.attr not in set(members):
                    known = ", ".join(sorted(members)) or "none"
                    raise TemplateError(f"unknown {node.node.name}.{node.attr} (known: {known})")

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """Render a value: a whole `{{ expr }}` keeps its native type, other templates give text,
        and containers are rendered item by item."""
        if isinstance(value, Mapping):
            return {k: self.render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, context) for v in value]
        if not is_template(value):
            return value
        match = _WHOLE_EXPRESSION.match(value)
        if match:
            return self.evaluate(match.group("expr"), context)
        try:
            return self._compile(value, "template").render(context)
        except Exception as exc:
            raise TemplateError(f"cannot render {value!r}: {exc}") from None

    def evaluate(self, expression: str, context: Mapping[str, Any]) -> Any:
        try:
            result = self._compile(expression, "expression")(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
        except Exception as exc:
            raise TemplateError(f"cannot evaluate {expression.strip()!r}: {exc}") from None
        return result
