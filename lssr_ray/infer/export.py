"""ONNX export of the LSSR inference graph (fixed chip shapes, opset 17).

One graph: the merged :class:`~lssr_ray.model.lssr.LSSRModel` from the preprocessed tensors to
the output images (bicubic upsampling, VAE encode (mean), aux fusion, UNet step with merged
LoRA, VAE decode of both skip terms, SAR head, the optional colour fix). Pre/post-processing
(NaN fill, scaling, nodata restore) stays in numpy (:mod:`lssr_ray.data.batch`) and is shared by
every engine; :class:`~lssr_ray.infer.ort_engine.OrtEngine` runs the graph.

Graph inputs (B = ``batch_size``, h = w = ``chip_size``, H = W = 3h):
``lr`` (B, 6, h, w) f32, ``dem`` (B, 2, H, W) f32, ``landcover`` (B, 1, H, W) i64,
``month`` (B,) i64, ``present`` (B, 3) f32, ``sar`` (B, 2, H, W) f32; output ``image``
(B, 6, H, W) f32 (HLS's valid reflectance range in image units, see
:func:`lssr_ray.data.normalize.valid_image_range`). A JSON sidecar (``<name>.json``) records
shapes and the base.
The same file feeds TensorRT on GPU hosts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import SCALE

INPUT_NAMES = ("lr", "dem", "landcover", "month", "present", "sar")
OUTPUT_NAME = "image"
OPSET = 17


def example_inputs(*, batch_size: int = 1, chip_size: int = 64, scale: int = SCALE, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the graph's fixed shapes (for tracing and parity checks)."""
    rng = np.random.default_rng(seed)
    b, h, H = batch_size, chip_size, chip_size * scale
    return {
        "lr": rng.uniform(-0.9, 0.2, (b, 6, h, h)).astype(np.float32),
        "dem": rng.normal(0, 0.3, (b, 2, H, H)).astype(np.float32),
        "landcover": rng.integers(0, 8, (b, 1, H, H)).astype(np.int64),
        "month": rng.integers(1, 13, (b,)).astype(np.int64),
        "present": np.ones((b, 3), np.float32),
        "sar": rng.uniform(-0.6, 0.4, (b, 2, H, H)).astype(np.float32),
    }


def export_onnx(
    model: Any,
    path: str | Path,
    *,
    batch_size: int = 1,
    chip_size: int = 64,
) -> Path:
    """Export a *merged* LSSRModel (``merge_for_inference()``, or an LSSRPipeline's ``model``)
    to ``path`` with fixed shapes; writes ``path`` and ``path.with_suffix('.json')``."""
    import torch

    if not getattr(model, "merged", False):
        model = model.merge_for_inference()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(batch_size=batch_size, chip_size=chip_size, scale=model.config.scale)
    args = tuple(torch.from_numpy(ex[k]) for k in INPUT_NAMES)
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,  # TorchScript exporter: the dynamo one needs onnxscript (not in the stack)
            do_constant_folding=True,
        )
    meta = {
        "opset": OPSET,
        "batch_size": batch_size,
        "chip_size": chip_size,
        "scale": model.config.scale,
        "inputs": {k: list(v.shape) for k, v in ex.items()},
        "output": [batch_size, 6, chip_size * model.config.scale, chip_size * model.config.scale],
        "base": {"uri": model.base_uri, "fingerprint": model.base_fingerprint},
        "lssr_config": model.config.to_dict(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def max_abs_diff(model: Any, engine: Any, inputs: dict[str, np.ndarray]) -> float:
    """max |torch - engine| of the output image on the given network inputs
    (:func:`~lssr_ray.data.batch.preprocess` output)."""
    import torch

    with torch.inference_mode():
        ref = model.forward_batch(inputs).numpy()
    return float(np.abs(ref - engine(inputs)).max())


__all__ = ["INPUT_NAMES", "OPSET", "OUTPUT_NAME", "example_inputs", "export_onnx", "max_abs_diff"]
