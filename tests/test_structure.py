"""The package's shape: no import cycle between convtvm's modules (imports inside functions count) and
no module over 700 lines (docs/design.md, "Module map")."""

import ast
from pathlib import Path

import convtvm

PACKAGE = Path(convtvm.__file__).parent
MAX_LINES = 700


def _modules() -> dict:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return mods


def _imports(mods: dict) -> dict:
    """module -> the convtvm modules it imports (package facade excluded: it sits on top by design)."""
    out = {}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.update([base] + [f"{base}.{a.name}" for a in node.names])
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        out[m] = {t for t in found if t in mods and t != m and t != "convtvm"}
    return out


def _cycle(graph: dict) -> list:
    """One import cycle as a list of modules, or []."""
    state = {}

    def visit(v, path):
        state[v] = "open"
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w, path + [w])
                if found:
                    return found
        state[v] = "done"
        return []
    for v in sorted(graph):
        if v not in state:
            found = visit(v, [v])
            if found:
                return found
    return []


def test_no_import_cycle():
    graph = _imports(_modules())
    assert _cycle(graph) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one


def test_no_module_over_700_lines():
    long = {m: n for m, f in _modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_module_defines_a_function_twice():
    """A second top-level ``def`` of the same name silently replaces the first (a merge once left two
    ``reproduces_torch`` of different signatures, and every record check raised a TypeError)."""
    twice = {}
    for m, f in _modules().items():
        names = [n.name for n in ast.parse(f.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            twice[m] = dup
    assert twice == {}
