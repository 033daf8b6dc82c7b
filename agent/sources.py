"""YAML files whose every problem is reported as `file:line: field: reason` (runbooks, policy files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = ["Loc", "Problem", "Problems", "YamlSource", "field_path", "reason"]

Loc = tuple[str | int, ...]


class YamlSource:
    """One YAML file: its data and, for any field path, the line it stands on."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        loader = yaml.SafeLoader(text)
        try:
            self.node = loader.get_single_node()
            self.data = loader.construct_document(self.node) if self.node is not None else None
        finally:
            loader.dispose()
        self.duplicates = _duplicate_keys(self.node)

    def add_duplicates(self, problems: Problems) -> None:
        """A key given twice in one mapping: YAML keeps the last one silently, which is never what was meant
        in a runbook or a policy (two `approval:` lines, one of them `auto`)."""
        for loc, line in self.duplicates:
            problems.note(self.path, line, field_path(loc), "duplicate key (the earlier value would be ignored)")

    def line(self, loc: Loc) -> int:
        node = self.node
        if node is None:
            return 1
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
        return int(node.start_mark.line) + 1


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[Loc, int]]:
    found: list[tuple[Loc, int]] = []
    seen_nodes: set[int] = set()  # an alias is the same node again: walked once
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())] if root is not None else []
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else ""
                if name and name != "<<":
                    if name in keys:
                        found.append(((*loc, name), int(key.start_mark.line) + 1))
                    keys.add(name)
                stack.append((value, (*loc, name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
    return sorted(found, key=lambda f: f[1])


def field_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("<") and part.endswith(">"):
            continue  # which form of a tagged union was checked (`<matchers>`): not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# pydantic's wording turned into "expected X" for the errors a runbook author meets.
_EXPECTED = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def reason(error: Any) -> str:
    kind = error["type"]
    if kind in ("missing", "extra_forbidden"):
        return _EXPECTED[kind]
    got = error.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {shown}"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{msg[0].lower()}{msg[1:]}, got {shown}"
    if kind == "string_pattern_mismatch":
        return f"{msg}, got {shown}"
    return msg[0].lower() + msg[1:] if msg else kind


@dataclass(frozen=True)
class Problem:
    """One problem in a file: shown as `file:line: field: message`, given as an object to --json."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return ": ".join(
            part for part in (f"{self.file}:{self.line}" if self.line else self.file, self.field, self.message) if part
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Problems:
    def __init__(self) -> None:
        self.found: list[Problem] = []

    @property
    def items(self) -> list[str]:
        return [str(problem) for problem in self.found]

    def note(self, file: Path | str, line: int | None, field: str | None, message: str) -> None:
        self.found.append(Problem(str(file), line, field, message))

    def add(self, source: YamlSource, loc: Loc, reason: str) -> None:
        self.note(source.path, source.line(loc), field_path(loc), reason)

    def from_validation(self, source: YamlSource, exc: ValidationError, prefix: Loc = ()) -> None:
        for error in exc.errors():
            self.add(source, prefix + tuple(error["loc"]), reason(error))
