"""The package's folders are its layers, and a module imports only from its own layer or the ones below.

Static: every `import` / `from` statement in a file counts, those inside functions too (a deferred import
is still a dependency), so a circle cannot hide behind a lazy import.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module belongs to the first layer one of whose prefixes it starts with.
LAYERS: tuple[tuple[str, ...], ...] = (
    # one error format, rules as data, whole files, signals as requests
    ("trainlab.errors", "trainlab.rules", "trainlab.atomic", "trainlab.interrupts"),
    ("trainlab.tracking",),  # MLflow/CSV runs, the spool, the creation lock, curves
    (  # the network and its config groups (conf/<group>/ ↔ these modules), validated at the edge
        "trainlab.norms",
        "trainlab.models",
        "trainlab.init",
        "trainlab.optim",
        "trainlab.scheduler",
        "trainlab.regularizers",
        "trainlab.data",
        "trainlab.augment",
        "trainlab.diagnostics",
        "trainlab.module",
        "trainlab.preflight",
        "trainlab.claims",
        "trainlab.config",
    ),
    ("trainlab.cluster",),  # SLURM, requeue, the compose stack's services
    ("trainlab.run",),  # one training run
    ("trainlab.population",),  # K runs at once
    ("trainlab.repeats",),  # a group of repeats and folds, with its statistics
    # what users call
    (
        "trainlab.figures",
        "trainlab.evaluate",
        "trainlab.studies",
        "trainlab.sweeps",
        "trainlab.cli",
        "trainlab.api",
        "trainlab",
    ),
)


def modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `name` imports (relative imports resolved), itself and parents left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def layer_of(name: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes if p != "trainlab"):
            return index
    return len(LAYERS) - 1  # trainlab itself: the top


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items() if name.startswith("trainlab")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_module_of_src_is_in_an_import_circle():
    known = modules()
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(edges) == []


def test_cycle_finder_finds_a_circle_through_a_deferred_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import x\n")
    (tmp_path / "pkg" / "b.py").write_text("def x():\n    from pkg import a\n")
    known = modules(tmp_path)
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


def test_every_module_imports_only_from_its_own_layer_or_below():
    upward = [
        f"{name} (layer {layer_of(name)}) imports {other} (layer {layer_of(other)})"
        for name, deps in graph().items()
        for other in deps
        if layer_of(other) > layer_of(name)
    ]
    assert upward == []


def test_every_module_of_the_package_has_a_layer():
    prefixes = {p for layer in LAYERS for p in layer}
    stray = [
        name
        for name in graph()
        if name != "trainlab"
        and not any(name == p or name.startswith(p + ".") for p in prefixes - {"trainlab"})
    ]
    assert stray == []
