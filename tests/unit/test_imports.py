"""Client libraries imported inside functions, from threads that start at once (a run's checks; the
daemon's first runs and its start-up sweep together).

Importing a package's module first (`import docker.errors`) takes that module's import lock and then
waits for the package's; a thread importing the package, which imports that module, waits the other way
round. Python ends such a deadlock by failing one of the imports (`_DeadlockError`), and the check
that made it was reported UNKNOWN: CI saw `docker.replicas` fail so in the daemon's first run. So a
function imports the package itself before any of its modules: it then waits for another thread's
import of the package holding no lock of its own, and finds the module loaded."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The client libraries checks and effects import when they first run, not when they are loaded.
LAZY = ("docker", "psycopg", "redis", "requests", "urllib3", "httpx", "psutil")


def _late_module_imports(tree: ast.Module, *, module_level: bool = False) -> list[tuple[int, str]]:
    """(line, module) of each import of a library's module inside a function (and, with `module_level`, at
    the top of a module that is itself imported lazily) that has not imported the library's package on an
    earlier line of the same scope."""
    found = []
    scopes: list[ast.AST] = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    for scope in [*scopes, *([tree] if module_level else [])]:
        packages: set[str] = set()
        for node in sorted((n for n in _own_nodes(scope) if isinstance(n, ast.Import | ast.ImportFrom)), key=_line):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top, _, rest = name.partition(".")
                if top not in LAZY:
                    continue
                if rest and top not in packages:
                    found.append((node.lineno, name))
                if not rest:
                    packages.add(top)
    return found


def _line(node: ast.stmt) -> int:
    return node.lineno


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of a scope, not those of the functions nested in it (each is its own scope)."""
    nodes: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def test_functions_import_a_client_library_before_its_modules() -> None:
    late = []
    for directory in ("agent", "checks", "remediations"):
        # Check and effect modules are loaded when first used, on a check's or a worker's thread: their
        # own top-level imports count too.
        lazy_module = directory != "agent"
        for path in sorted((REPO / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            found = _late_module_imports(tree, module_level=lazy_module)
            late += [f"{path.relative_to(REPO)}:{line}: {module}" for line, module in found]
    assert not late, "import the package first:\n" + "\n".join(late)


def test_the_rule_sees_a_module_imported_first() -> None:
    source = (
        "from docker.errors import NotFound\n"
        "def f():\n    import docker.errors\n"
        "def g():\n    import docker\n    import docker.errors\n"
        "def h():\n    def inner():\n        import docker\n    import docker.errors\n"
    )
    assert _late_module_imports(ast.parse(source)) == [(3, "docker.errors"), (10, "docker.errors")]
    assert (1, "docker.errors") in _late_module_imports(ast.parse(source), module_level=True)
