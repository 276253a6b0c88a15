"""The shape of the package, checked from its source (issue 33): the modules form layers
that import only downwards and never in a circle, and functions stay small enough to read."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "clyde"

#: Lowest first. A module may import its own layer and those below; no circles anywhere.
LAYERS = [
    ("base", {"_version", "errors", "_files", "_cache", "_notice", "_pool", "_programs",
              "_supervise", "options"}),
    ("io and colour", {"io", "color", "_arrays"}),
    ("kernels", {"kmeans", "metrics", "hist", "binning"}),
    ("stages", {"colorfit", "pixel", "batched", "patch", "adaptive", "codec", "codebook",
                "sweep", "figures"}),
    ("commands", {"hub", "written", "folder", "batch", "dataset", "gallery", "train"}),
    ("api", {"api"}),
    ("command line", {"cli", "__main__", "__init__"}),
]
LAYER = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
MAX_LINES, MAX_PARAMS = 80, 10


def _modules():
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(SRC.glob("*.py"))}


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The clyde modules ``name`` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clyde."):
            out.add(node.module.split(".")[1])
    return out - {name}


def test_every_module_has_a_layer():
    assert sorted(set(_modules()) - set(LAYER)) == []


def test_modules_import_only_their_layer_and_below():
    upward = []
    for name, tree in _modules().items():
        if name == "__init__":
            continue
        for dep in _imports(name, tree):
            if LAYER.get(dep, -1) > LAYER[name]:
                upward.append(f"{name} ({LAYERS[LAYER[name]][0]}) imports {dep} "
                              f"({LAYERS[LAYER[dep]][0]})")
    assert upward == []


def test_imports_form_no_circles():
    graph = {n: _imports(n, t) for n, t in _modules().items()}
    cycles, state = [], {}

    def visit(n, path):
        state[n] = "open"
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def _functions():
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield name, node


def test_no_function_is_longer_than_80_lines():
    long = [f"{m}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for m, f in _functions()
            if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert long == []


def test_no_function_outside_the_command_line_takes_more_than_10_parameters():
    many = []
    for m, f in _functions():
        a = f.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        n = len(names) + bool(a.vararg) + bool(a.kwarg) - (names[:1] in (["self"], ["cls"]))
        if m != "cli" and n > MAX_PARAMS:
            many.append(f"{m}.{f.name}: {n} parameters")
    assert many == []


@pytest.mark.parametrize("text", ["import jax._src", "from jax._src"])
def test_private_jax_is_read_in_one_place_only(text):
    users = [p.name for p in SRC.glob("*.py") if text in p.read_text()]
    assert users in ([], ["_programs.py"])

