"""The layering promises of issue 12: the numpy batch contract and the ONNX engine run without
torch, and data/, model/ and infer/ import no module that imports them back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lssr_ray.config import REPO_ROOT

PACKAGE = REPO_ROOT / "lssr_ray"
LAYERS = ("lssr_ray.data", "lssr_ray.model", "lssr_ray.infer")

NO_TORCH = """
import sys
import numpy as np
from lssr_ray.infer.base import super_resolve
from lssr_ray.infer.factory import make_engine
from lssr_ray.model.checkpoint import resolve_checkpoint

resolve_checkpoint(None).adapter_sha256()
engine = make_engine("onnxruntime", onnx_path=sys.argv[1], intra_op_threads=1)
batch = dict(np.load(sys.argv[3]))
np.save(sys.argv[2], super_resolve(engine, batch))
print("torch imported:", "torch" in sys.modules)
"""


def test_batch_contract_and_onnx_engine_never_import_torch(tmp_path):
    """What an onnxruntime (or TensorRT) actor runs: preprocess, the engine, postprocess, the
    checkpoint resolver; in a fresh interpreter ``torch`` stays out of ``sys.modules``, and the
    result is the torch engine's on the same network."""
    import torch
    from torch import nn

    from lssr_ray.data.batch import preprocess
    from lssr_ray.infer.base import super_resolve
    from lssr_ray.infer.factory import make_engine

    class Up(nn.Module):  # network inputs -> image, depending on the aux inputs too
        def forward(self, lr, dem, landcover, sar, month, present):
            up = nn.functional.interpolate(lr, scale_factor=3, mode="nearest")
            return up + 0.01 * dem[:, :1] * present[:, :1, None, None] + 0.001 * month[:, None, None, None]

    names = ["lr", "dem", "landcover", "sar", "month", "present"]
    rng = np.random.default_rng(0)
    batch = {"lr": rng.uniform(0.02, 0.3, (2, 6, 8, 8)).astype("float32"), "month": np.array([5, 7]),
             "dem": rng.uniform(0, 90, (2, 1, 24, 24)).astype("float32")}
    batch["lr"][0, :, 1, 1] = np.nan
    np.savez(tmp_path / "batch.npz", **batch)
    inputs = preprocess(batch)
    path = tmp_path / "up.onnx"
    torch.onnx.export(Up(), tuple(torch.from_numpy(inputs[k]) for k in names), str(path), input_names=names,
                      output_names=["image"], opset_version=17, dynamo=False)
    out = tmp_path / "sr.npy"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(path), str(out), str(tmp_path / "batch.npz")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "torch imported: False"
    sr, ref = np.load(out), super_resolve(make_engine("torch", torch_module=Up()), batch)
    assert sr.shape == (2, 6, 24, 24) and np.isnan(sr[0, :, 3:6, 3:6]).all() and np.isfinite(sr[1]).all()
    np.testing.assert_array_equal(np.isnan(sr), np.isnan(ref))
    assert np.nanmax(np.abs(sr - ref)) < 1e-6


def _imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):  # module-level and function-level alike
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def _cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Import cycles (module-level or in functions) among the modules of ``package``."""
    files = {".".join(f.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in package.rglob("*.py")}
    graph = {m: _imports(f, set(files)) - {m} for m, f in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_through_data_model_infer():
    bad = [c for c in _cycles() if any(m.startswith(LAYERS) for m in c)]
    assert not bad, f"import cycles: {bad}"


@pytest.mark.parametrize("function_level", [False, True])
def test_cycle_finder_sees_a_cycle(function_level, tmp_path):
    """The checker can fail: two modules importing each other (also inside a function) are found."""
    pkg = tmp_path / "lssr_ray"
    (pkg / "infer").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "infer" / "__init__.py").write_text("")
    (pkg / "infer" / "engine.py").write_text("from lssr_ray.infer.torch_engine import TorchEngine\n")
    back = "from lssr_ray.infer.engine import run_in_batches\n"
    (pkg / "infer" / "torch_engine.py").write_text(f"def f():\n    {back}" if function_level else back)
    assert _cycles(pkg) == [["lssr_ray.infer.engine", "lssr_ray.infer.torch_engine"]]
