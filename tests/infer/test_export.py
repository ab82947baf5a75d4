"""ONNX export of the merged LSSR graph vs torch, on real Flanders chips (small base)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lssr_ray.errors import BatchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))

#: max |onnxruntime - torch| allowed on images in [-1, 1] (float32 kernels differ in order)
TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from _chips import flanders_batch
    from _zero_init import randomize_zero_inits

    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.infer.export import export_onnx
    from lssr_ray.infer.ort_engine import OrtEngine
    from lssr_ray.model.base import load_base
    from lssr_ray.model.lssr import LSSRModel
    from lssr_ray.model.pipeline import LSSRPipeline

    torch.manual_seed(0)
    model = LSSRModel(load_base(SMALL_BASE_DIR))
    # non-zero LoRA B, detail gate and fusion / SAR outputs: merged adapters and the pixel skip
    # matter in the graph (untrained, the model is exactly bicubic)
    randomize_zero_inits(model, std=0.02)
    pipe = LSSRPipeline.from_model(model)
    path = export_onnx(pipe.model, tmp_path_factory.mktemp("onnx") / "lssr.onnx", batch_size=2, chip_size=16)
    batch, _ = flanders_batch()
    return pipe, OrtEngine(path, intra_op_threads=1), batch, path


def test_onnx_matches_torch_on_real_chips(exported):
    from lssr_ray.data.batch import preprocess
    from lssr_ray.infer.base import super_resolve
    from lssr_ray.infer.export import max_abs_diff

    pipe, runner, batch, path = exported
    assert path.with_suffix(".json").is_file()
    diff = max_abs_diff(pipe.model, runner, preprocess(batch))
    print(f"ONNX vs torch max abs diff (image units): {diff:.2e}")
    assert diff < TOL
    ref, got = pipe(batch)["sr"], super_resolve(runner, batch)
    assert np.nanmax(np.abs(ref - got)) < TOL
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(got))
    # the graph is more than the bicubic skip: adapters, gate, fusion and SAR head act
    inputs = preprocess(batch)
    up = torch.nn.functional.interpolate(torch.from_numpy(inputs["lr"]), scale_factor=3, mode="bicubic",
                                         align_corners=False).clamp(-1, 1).numpy()
    assert np.abs(runner(inputs) - up).max() > 1e-3


def test_onnx_with_wavelet_colour_fix(exported, tmp_path):
    """The colour fix is inside the exported graph (dilated convs, replicate padding)."""
    import copy
    import dataclasses

    from lssr_ray.data.batch import preprocess
    from lssr_ray.infer.export import export_onnx, max_abs_diff
    from lssr_ray.infer.ort_engine import OrtEngine

    pipe, _, batch, _ = exported
    model = copy.deepcopy(pipe.model)
    model.config = dataclasses.replace(model.config, color_fix="wavelet")
    path = export_onnx(model, tmp_path / "fix.onnx", batch_size=2, chip_size=16)
    inputs = preprocess(batch)
    assert max_abs_diff(model, OrtEngine(path, intra_op_threads=1), inputs) < TOL
    with torch.inference_mode():
        assert (model.forward_batch(inputs) - pipe.model.forward_batch(inputs)).abs().max() > 1e-4


def test_onnx_nodata_and_missing_modalities(exported):
    from lssr_ray.infer.base import super_resolve

    pipe, runner, batch, _ = exported
    b = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
    b["lr"][0, :, 2, 2] = np.nan
    b["present"][:, 2] = 0
    got, ref = super_resolve(runner, b), pipe(b)["sr"]
    assert np.isnan(got[0][:, 6:9, 6:9]).all() and np.isfinite(got[1]).all()
    assert np.nanmax(np.abs(ref - got)) < TOL


def test_onnx_fixed_shapes(exported):
    """The graph's batch of 2 is fixed: one chip is padded and sliced back (same values as in a
    full batch); another chip size is refused."""
    from lssr_ray.data.batch import preprocess

    _, runner, batch, _ = exported
    assert runner.fixed_batch == 2 and runner.chip_shape == (16, 16)
    one = {k: v[:1] for k, v in batch.items()}
    np.testing.assert_array_equal(runner(preprocess(one)), runner(preprocess(batch))[:1])
    small = {k: (v[:, :, :8, :8] if k == "lr" else v[:, :, :24, :24] if v.ndim == 4 else v) for k, v in batch.items()}
    with pytest.raises(BatchError, match="exported for"):
        runner(preprocess(small))
