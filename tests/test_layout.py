"""The layout rules of the project, checked on the code itself: imports point one way (no
cycle, no import inside a function), no module over 600 lines, no function over 80. They hold
for the modules at the root and for the measuring tools' package, benchmarks/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


PACKAGES = ("benchmarks",)  # folders of modules, checked like the root's


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file: the root's `*.py` and each package's (`benchmarks.timing`)."""
    files = {path.stem: path for path in sorted(repo.glob("*.py"))}
    for package in PACKAGES:
        files.update({f"{package}.{path.stem}": path for path in sorted((repo / package).glob("*.py"))})
    return files


def project_modules(repo: Path = REPO) -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name, path in module_files(repo).items()}


def imports_of(tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules `tree` imports, anywhere in it (`from benchmarks import timing` and
    `from benchmarks.timing import x` both name benchmarks.timing)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt, node]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def long_functions(tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def nested_imports(tree: ast.Module) -> list[tuple[str, int]]:
    found = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [(func.name, node.lineno) for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return found


def test_no_import_cycle():
    modules = project_modules()
    graph = {name: imports_of(tree, set(modules)) - {name} for name, tree in modules.items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_module_over_600_lines():
    too_long = {name: n for name, p in module_files().items()
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_no_function_over_80_lines_and_no_import_inside_one(name):
    tree = project_modules()[name]
    assert not long_functions(tree), f"{name}.py: functions over {MAX_FUNCTION_LINES} lines: {long_functions(tree)}"
    assert not nested_imports(tree), f"{name}.py: imports inside functions: {nested_imports(tree)}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Each check on code made to break it, so that none of them can pass by looking at nothing."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import c\n")
    (tmp_path / "c.py").write_text("from a import x\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "timing.py").write_text("from benchmarks import precision\n")
    (tmp_path / "benchmarks" / "precision.py").write_text("from benchmarks.timing import Row\n")
    modules = project_modules(tmp_path)
    assert {"a", "benchmarks.timing", "benchmarks.precision"} <= set(modules)
    graph = {name: imports_of(tree, set(modules)) - {name} for name, tree in modules.items()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({k: v for k, v in graph.items() if k.startswith("benchmarks")}) == \
        ["benchmarks.precision", "benchmarks.timing", "benchmarks.precision"]
    assert nested_imports(modules["b"]) == [("f", 2)]
    body = "\n".join(f"    x = {i}" for i in range(80))
    assert long_functions(ast.parse(f"def g():\n{body}\n")) == [("g", 81)]
    assert long_functions(ast.parse("def g():\n    return 1\n")) == []
