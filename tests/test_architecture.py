"""The package's structure (docs/architecture.md): imports go one way, the numeric core never
reaches the table edge, and modules stay a size a reader can hold."""
import ast
from pathlib import Path

import jaxmm

PACKAGE = Path(jaxmm.__file__).parent
# the modules that compute the likelihood and the fit: arrays in, arrays out
CORE = ("_inner", "_laplace", "_gradient", "_lmm", "_crossed_lmm", "_crossed_engine", "_quadrature", "_driver", "_verdict", "_optimize", "_engine",
        "_start", "_smallmat", "_params", "_types", "_families")
EDGE = {"pandas", "formulaic", "_table", "_design", "_model_matrix", "_plain_matrix", "_fit", "_results"}
MAX_LINES = 430


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """jaxmm modules (by name) and third-party packages a module imports."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, top_level_only) & set(modules) for name, path in modules.items()}


def test_no_import_circle_even_through_imports_inside_functions():
    graph = _graph(top_level_only=False)
    state: dict[str, int] = {}

    def visit(name, path):
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [name, dep]))
            if dep not in state:
                visit(dep, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_numeric_core_does_not_reach_the_table_edge():
    graph = _graph(top_level_only=True)
    modules = _modules()
    for name in CORE:
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            third_party = _imports(modules[current], top_level_only=True) - set(modules)
            assert not (third_party | {current}) & EDGE, f"{name} reaches {sorted((third_party | {current}) & EDGE)} " \
                                                         f"through {current}"
            todo.extend(graph[current])


def _code_lines(path: Path) -> int:
    """Lines outside docstrings: the public classes' docstrings hold the API reference, with
    an example per member, and are read as documentation rather than code."""
    source = path.read_text()
    docs = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                   str):
                docs.update(range(first.lineno, first.end_lineno + 1))
    return len(source.splitlines()) - len(docs)


def test_modules_stay_readable():
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := _code_lines(p)) > MAX_LINES}
    assert not long, long
