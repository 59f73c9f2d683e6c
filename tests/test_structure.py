"""The shape of the code, read with `ast`: what a new engineer relies on when finding their way.

Every import counts, at the top or inside a function, under TYPE_CHECKING or not: a
lazy import is still an arrow between two modules.
"""

import ast
from pathlib import Path

import supervisor

PACKAGE = Path(supervisor.__file__).parent
MAX_METHODS = 35
# what runs a service's processes: only the composition root (main.py, wiring.py) and the
# registry name them; the core reaches them through the Driver protocol
SERVER_PACKAGES = ("supervisor.uwsgi", "supervisor.gunicorn", "supervisor.workers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported(name: str) -> set[str]:
    """The modules of this package that module `name` imports, anywhere in it."""
    found = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def cycles() -> list[list[str]]:
    """The import circles among the package's modules (Tarjan's strongly connected components)."""
    graph = {name: imported(name) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_module_imports_itself_through_others():
    assert cycles() == []


def test_the_state_package_reaches_servers_only_through_the_driver_protocol():
    wrong = {
        name: sorted(m for m in imported(name) if m.startswith(SERVER_PACKAGES) or m in ("supervisor.main",))
        for name in MODULES
        if name.startswith("supervisor.state")
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def methods(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> set[str]:
    """A class's methods, with those of its bases defined in this package (a mixin's are its host's)."""
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in classes and classes[base.id] is not cls:
            own |= methods(classes[base.id], classes)
    return own


def test_no_class_has_more_methods_than_one_class_should_own():
    classes = {node.name: node for tree in TREES.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    sizes = {
        f"{name}.{node.name}": len(methods(node, classes))
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    assert {where: n for where, n in sizes.items() if n > MAX_METHODS} == {}
