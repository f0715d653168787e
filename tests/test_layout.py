"""The layout is the architecture: every import of the project's modules (read with `ast`, lazy
imports inside functions included) runs one way, and no two modules import each other in a circle.

    devices.base  <-  devices  <-  runtime  <-  export  <-  pipeline
    (devices.base: imported by every layer, imports none)
    runtime: its top modules (runner, stream, ...) -> measure -> model -> inputs;  measure -> tasks (deploy's
    candidates scored by a task) -> model, judge, inputs
    pipeline: cli -> stages -> compress -> training -> models / data -> core  (report: stages -> report -> core)
"""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("devices", "runtime", "export", "pipeline")
MAX_LINES = 400

# Which parts each part may import (besides itself). A part is a top-level folder, devices/base/ (the
# foundation), or a package (or the training module) inside pipeline/.
RUNTIME = {"runtime", "runtime.measure", "runtime.model", "runtime.inputs", "runtime.judge", "runtime.tasks"}
BELOW_RUNTIME = {"devices", "devices.base"}
BELOW_PIPELINE = {"export"} | RUNTIME | BELOW_RUNTIME
ALLOWED = {
    "devices.base": set(),
    "devices": {"devices.base"},
    "runtime.inputs": BELOW_RUNTIME,
    "runtime.model": {"runtime.inputs"} | BELOW_RUNTIME,
    "runtime.measure": {"runtime.model", "runtime.inputs", "runtime.tasks"} | BELOW_RUNTIME,
    "runtime.judge": BELOW_RUNTIME,
    "runtime.tasks": {"runtime.model", "runtime.judge", "runtime.inputs"} | BELOW_RUNTIME,
    "runtime": RUNTIME | BELOW_RUNTIME,
    "export": RUNTIME | BELOW_RUNTIME,
    "pipeline.core": RUNTIME | BELOW_RUNTIME,
    "pipeline.data": {"pipeline.core"} | RUNTIME | BELOW_RUNTIME,
    "pipeline.models": {"pipeline.core"} | RUNTIME | BELOW_RUNTIME,
    "pipeline.training": {"pipeline.data", "pipeline.models", "pipeline.core"} | RUNTIME | BELOW_RUNTIME,
    "pipeline.compress": {"pipeline.training", "pipeline.models", "pipeline.data", "pipeline.core"} | BELOW_PIPELINE,
    "pipeline.report": {"pipeline.core"} | RUNTIME | BELOW_RUNTIME,
    "pipeline.stages": {
        "pipeline.compress",
        "pipeline.training",
        "pipeline.models",
        "pipeline.data",
        "pipeline.report",
        "pipeline.core",
    }
    | BELOW_PIPELINE,
    "pipeline.cli": {
        "pipeline.stages",
        "pipeline.compress",
        "pipeline.training",
        "pipeline.models",
        "pipeline.data",
        "pipeline.report",
        "pipeline.core",
    }
    | BELOW_PIPELINE,
    "pipeline": {"pipeline.cli"},  # edgepipe.pipeline itself and its __main__
}


def module_files() -> dict[str, Path]:
    """edgepipe.<dotted name> -> file, for every module of the four folders."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [folder, *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["edgepipe." + ".".join(parts)] = path
    return out


MODULES = module_files()


def part_of(module: str) -> str:
    """The part a module belongs to: 'runtime', 'runtime.model', 'devices.base', 'pipeline.core', 'pipeline'
    (for the package itself)..."""
    parts = module.split(".")[1:]
    if parts[:2] == ["devices", "base"]:
        return "devices.base"
    if parts[0] == "runtime" and len(parts) > 2:  # runtime/<package>/<module>
        return f"runtime.{parts[1]}"
    if parts[0] != "pipeline" or len(parts) == 1 or parts[1] == "__main__":
        return parts[0]
    return f"pipeline.{parts[1]}"


def imports_of(module: str) -> set[str]:
    """The project's modules that `module` imports, anywhere in its body."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` depends on the module pkg.mod where there is one, else on pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("edgepipe."):
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in MODULES and name != module:
                    found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_belongs_to_a_known_part():
    unknown = sorted(m for m in MODULES if part_of(m) not in ALLOWED)
    assert not unknown, f"modules outside the layout (give them a package, or add the part to ALLOWED): {unknown}"


def test_imports_run_one_way():
    wrong = sorted(
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        for dep in deps
        if part_of(dep) != part_of(m) and part_of(dep) not in ALLOWED[part_of(m)]
    )
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_the_checker_sees_lazy_and_from_imports():
    """The graph is not empty by accident: known edges of both kinds are found."""
    assert "edgepipe.pipeline.core.registry" in GRAPH["edgepipe.pipeline.core.recipe"]  # module level
    assert "edgepipe.pipeline.compress.channels.sensitivity" in GRAPH["edgepipe.pipeline.stages.prune"]  # in a function
    assert "edgepipe.devices" in GRAPH["edgepipe.runtime.measure.bench"]  # `from edgepipe.devices import EdgepipeError`
    assert sum(len(d) for d in GRAPH.values()) > 150


def test_no_import_circle():
    """Tarjan's strongly connected components: any component of more than one module is a circle."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_modules_fit_in_one_read_and_say_what_they_hold():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    undocumented = [
        str(p.relative_to(REPO)) for p in MODULES.values() if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not undocumented, f"modules without an opening docstring: {undocumented}"


MAX_FUNCTION_LINES = 80


def test_functions_fit_in_one_read():
    """No function (docstring included) of the project or its benchmarks is longer than MAX_FUNCTION_LINES."""
    files = [*MODULES.values(), *sorted((REPO / "benchmarks").glob("*.py"))]
    long = [
        f"{p.relative_to(REPO)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in files
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "functions over {} lines:\n{}".format(MAX_FUNCTION_LINES, "\n".join(long))


def test_every_package_is_installed():
    """A package missing from pyproject's list would be absent from a wheel (editable installs hide it)."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert packages == listed, (
        f"not listed: {sorted(packages - listed)}; listed but absent: {sorted(listed - packages)}"
    )


def test_entry_points_register_every_stage_and_transform():
    """The stages and transforms the core finds through entry points are the modules' own registrations."""
    tomllib = pytest.importorskip("tomllib")
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    from edgepipe.pipeline.core.registry import stages, transforms

    assert set(eps["edgepipe.stages"]) <= set(stages())
    assert set(eps["edgepipe.transforms"]) <= set(transforms())
    for name, target in eps["edgepipe.stages"].items():
        assert part_of(target) == "pipeline.stages" and stages()[name].handler.__module__ == target
    for name, target in eps["edgepipe.transforms"].items():
        assert part_of(target) == "pipeline.compress" and transforms()[name].__module__ == target
