"""The package's shape, checked from the source (issue 12): imports run one way, no cycles,
no module grows past the size a reader can hold, and no script edits sys.path.

Imports are read with ``ast`` from every ``lssr_ray`` module, at module level and inside
functions alike: a lazy import that closes a cycle is still a cycle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "lssr_ray"
MAX_MODULE_LINES = 400

# Layer of each sub-package (imports may only go to the same or a lower layer).
LAYERS = {
    "lssr_ray.cli": 4,
    "lssr_ray.mapping": 3, "lssr_ray.train": 3, "lssr_ray.classify": 3,
    "lssr_ray.infer": 2, "lssr_ray.model": 2,
    "lssr_ray.data": 1,
}
# data/ sits below model/ and infer/: it must not reach up into them.
FORBIDDEN = {
    "lssr_ray.data": ("lssr_ray.model", "lssr_ray.infer", "lssr_ray.mapping", "lssr_ray.train",
                      "lssr_ray.classify", "lssr_ray.cli"),
    "lssr_ray.model": ("lssr_ray.mapping", "lssr_ray.train", "lssr_ray.classify", "lssr_ray.cli"),
    "lssr_ray.infer": ("lssr_ray.mapping", "lssr_ray.train", "lssr_ray.classify", "lssr_ray.cli"),
}


def _module_name(path: Path, root: Path = REPO_ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "lssr_ray":
                found.add(t)
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = _modules(package)
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_detector_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("function_level", [False, True])
def test_cycle_finder_sees_a_planted_package_cycle(function_level, tmp_path):
    """Two modules importing each other (also inside a function) are found in real files."""
    pkg = tmp_path / "lssr_ray"
    (pkg / "infer").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "infer" / "__init__.py").write_text("")
    (pkg / "infer" / "engine.py").write_text("from lssr_ray.infer.torch_engine import TorchEngine\n")
    back = "from lssr_ray.infer.engine import run_in_batches\n"
    (pkg / "infer" / "torch_engine.py").write_text(f"def f():\n    {back}" if function_level else back)
    assert _cycles(_graph(pkg)) == [["lssr_ray.infer.engine", "lssr_ray.infer.torch_engine"]]


def test_no_module_imports_one_that_imports_it_back():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_imports_run_downwards():
    wrong = []
    for mod, targets in _graph().items():
        for layer, banned in FORBIDDEN.items():
            if mod == layer or mod.startswith(layer + "."):
                wrong += [f"{mod} -> {t}" for t in targets if any(t == b or t.startswith(b + ".") for b in banned)]
    assert not wrong, "imports against the layer order (docs/ARCHITECTURE.md):\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_library_module_fits_in_a_reader_head(path):
    n = len(path.read_text().splitlines())
    assert n < MAX_MODULE_LINES, f"{path.relative_to(REPO_ROOT)} has {n} lines (limit {MAX_MODULE_LINES})"


def test_scripts_and_jobs_use_the_installed_package():
    edits = [str(p.relative_to(REPO_ROOT)) for d in ("jobs", "scripts") for p in sorted((REPO_ROOT / d).glob("*.py"))
             if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not edits, f"sys.path edits in {edits}: the package is installed (make venv); import it"
