"""The import graph of src/o2o, built from every import statement (function-level ones included): no
cycles, no import from a lower layer into a higher one, no import of another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "o2o"
LOWER = ("o2o.envs", "o2o.data", "o2o.nn", "o2o.agents", "o2o.lagrange")
UPPER = ("o2o.bridge", "o2o.loops", "o2o.methods", "o2o.experiments", "o2o.cli", "o2o.api", "o2o.presets", "o2o.runconfig")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every o2o import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "o2o"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "o2o":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in modules else (base, alias.name, node.lineno))
    return found


def _graph():
    modules = _modules()
    edges, private = {}, []
    for name, path in modules.items():
        for target, symbol, line in _imports(name, path, modules):
            edges.setdefault(name, set()).add(target)
            if symbol and symbol.startswith("_") and not (symbol.startswith("__") and symbol.endswith("__")) and target != name:
                private.append(f"{path.relative_to(ROOT.parent)}:{line} imports {symbol} from {target}")
    return modules, edges, private


def _cycles(modules, edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in modules:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def _under(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_the_graph_sees_function_level_and_relative_imports(tmp_path, graph):
    modules, edges, _ = graph
    assert len(modules) > 50
    # function-level imports count: the package's lazy API imports o2o.api inside a function
    assert "o2o.api" in edges["o2o"]
    # the cycle finder finds a planted cycle
    fake = {"a": Path("a"), "b": Path("b"), "c": Path("c")}
    assert _cycles(fake, {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(fake, {"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycles(graph):
    modules, edges, _ = graph
    assert _cycles(modules, edges) == []


def test_lower_layers_do_not_import_upward(graph):
    _, edges, _ = graph
    upward = sorted(f"{m} -> {t}" for m, targets in edges.items() if _under(m, LOWER) for t in targets if _under(t, UPPER))
    assert upward == []


def test_no_module_imports_another_modules_private_names(graph):
    _, _, private = graph
    assert private == []
