"""The package's layout rules, checked on the source: no module imports another's underscore
names or reads another object's underscore attributes, and module-level imports form no circle
(imports inside functions, which run late, are allowed to point back)."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "fastrl"


def _modules():
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, ast.parse(p.read_text("utf-8"), str(p))


def _resolve(name, is_pkg, node):
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def test_no_private_reaches():
    bad = []
    for name, is_pkg, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                bad += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name) \
                    and node.value.id not in ("self", "cls", "other"):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert bad == []


def test_no_import_circles():
    mods = {name: (is_pkg, tree) for name, is_pkg, tree in _modules()}
    graph = {}
    for name, (is_pkg, tree) in mods.items():
        deps = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                target = _resolve(name, is_pkg, node)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        # a module imports its parent packages first; those edges are Python's, not ours
        graph[name] = {d for d in deps if d in mods and d != name and not name.startswith(d + ".")}
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for d in sorted(graph[n]):
            visit(d)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert cycles == []
