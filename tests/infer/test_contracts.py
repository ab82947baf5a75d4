"""The layering promises of issue 12: the numpy batch contract and the ONNX engine run without
torch, and data/, model/ and infer/ import no module that imports them back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

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
