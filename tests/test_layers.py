"""The package's import graph, read from the source (ast): no circle, no import of the package hidden inside a
function, and nothing importing upward through the layers of DESIGN.md section 3."""

import ast
from pathlib import Path

from score.config import REPO_ROOT

PACKAGE = REPO_ROOT / "code" / "score"
# DESIGN.md section 3, with the modules it does not name placed where what they import puts them. The checker and
# the code reward (grader/, code/) import nothing else of the package, so they sit below data.py, which reads gold
# answers with the checker's extractor; diagnostics.py (pure functions of answers and texts) sits with objectives.py
# because logs.py computes the training steps' diagnostics with it.
LAYERS = {
    0: ("grader", "code"),
    1: ("config", "data", "prompts", "seeding", "distributed", "progress", "preemption", "tiny"),
    2: ("domains", "guards"),
    3: ("models", "engines", "rollout"),
    4: ("objectives", "diagnostics"),
    5: ("provenance", "checkpoints", "locks", "logs"),
    6: ("trainer", "evaluate", "monitor", "scaling", "sft", "baselines", "testbed", "testbed_code", "download"),
    7: ("card", "push", "experiment"),
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_imports(module: str) -> list[tuple[str, ast.AST, bool]]:
    """(imported module of the package, the import node, whether it is at the module's top level)."""
    tree = ast.parse(MODULES[module].read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        # a package importing its own face (score.grader.compare: from score.grader import symbolic) is no arrow up
        targets = {n for n in names if n in MODULES and n != module and not module.startswith(n + ".")}
        found += [(target, node, id(node) in top) for target in sorted(targets)]
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    (number,) = [n for n, names in LAYERS.items() if top in names] or [None]
    assert number is not None, f"{module} has no layer in LAYERS: place it as DESIGN.md section 3 says"
    return number


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != "score":
            layer(module)


def test_no_import_of_the_package_inside_a_function():
    hidden = [
        f"{MODULES[module].relative_to(REPO_ROOT)}:{node.lineno} imports {target}"
        for module in MODULES
        for target, node, at_top in package_imports(module)
        if not at_top and target != "score"
    ]
    assert hidden == []


def test_nothing_imports_upward():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module in MODULES
        if module != "score"
        for target, _, _ in package_imports(module)
        if target != "score" and layer(target) > layer(module)
    ]
    assert upward == []


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_circles_finds_a_circle():  # the check below would pass on any graph if circles() found none
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    edges = {module: {target for target, _, _ in package_imports(module)} for module in MODULES}
    assert circles(edges) == []
