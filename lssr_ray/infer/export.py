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
shapes and the base. ``dynamic_batch`` leaves B free (named ``batch``) for engines that time or
run several batch sizes from one graph.

**External data.** A protobuf message is limited to 2 GB, so the graph of an SD-2.1-size model
(~3.5 GB of float32 weights) cannot be one file: above :data:`EXTERNAL_DATA_OVER` bytes of
parameters (or when asked) the weights go to one file ``<name>.data`` next to the graph, and the
graph refers to it by relative name. Engines are given the graph's *path* (never its bytes):
onnxruntime and TensorRT's ``OnnxParser.parse_from_file`` read the weights from the same folder.
:func:`cached_export` keeps one such folder per (base, adapters, seed, shapes) in the LSSR cache;
every node that lacks it exports its own (the same graph), so clusters need no shared disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import SCALE

INPUT_NAMES = ("lr", "dem", "landcover", "month", "present", "sar")
OUTPUT_NAME = "image"
OPSET = 17
EXTERNAL_DATA_OVER = 1 << 30
"""Parameter bytes above which :func:`export_onnx` writes the weights as external data (well
under protobuf's 2 GB limit: the graph also holds constants folded from them)."""
GRAPH_FILE = "model.onnx"
"""Name of the graph in a :func:`cached_export` folder."""


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
    external_data: bool | None = None,
    dynamic_batch: bool = False,
) -> Path:
    """Export a *merged* LSSRModel (``merge_for_inference()``, or an LSSRPipeline's ``model``)
    to ``path``; writes ``path``, ``path.with_suffix('.json')`` and, with external data,
    ``<path>.data``. ``external_data`` None: when the parameters exceed
    :data:`EXTERNAL_DATA_OVER` bytes. Returns ``path``."""
    import torch

    if not getattr(model, "merged", False):
        model = model.merge_for_inference()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_OVER
    ex = example_inputs(batch_size=batch_size, chip_size=chip_size, scale=model.config.scale)
    device = next(model.parameters()).device  # trace where the weights are (CUDA on GPU hosts)
    args = tuple(torch.from_numpy(ex[k]).to(device) for k in INPUT_NAMES)
    dynamic = {k: {0: "batch"} for k in (*INPUT_NAMES, OUTPUT_NAME)} if dynamic_batch else None
    # The TorchScript exporter writes a > 2 GB model as one file per tensor next to the graph:
    # export into a scratch folder, then write the graph and one weights file in place.
    scratch = path.parent / f".export-{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(scratch / path.name),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamo=False,  # TorchScript exporter: the dynamo one needs onnxscript (not in the stack)
                do_constant_folding=True,
                dynamic_axes=dynamic,
            )
        _write_graph(scratch / path.name, path, external_data=external_data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    b = "batch" if dynamic_batch else batch_size
    meta = {
        "opset": OPSET,
        "batch_size": batch_size,
        "dynamic_batch": bool(dynamic_batch),
        "chip_size": chip_size,
        "scale": model.config.scale,
        "external_data": [p.name for p in graph_files(path)[1:]],
        "inputs": {k: [b, *v.shape[1:]] for k, v in ex.items()},
        "output": [b, 6, chip_size * model.config.scale, chip_size * model.config.scale],
        "base": {"uri": model.base_uri, "fingerprint": model.base_fingerprint},
        "lssr_config": model.config.to_dict(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def _write_graph(src: Path, dest: Path, *, external_data: bool) -> None:
    """``src`` (and any tensor files beside it) -> ``dest``, weights in ``<dest>.data`` or inline."""
    import onnx

    data = dest.with_name(dest.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing data file
    proto = onnx.load(str(src), load_external_data=True)
    if external_data:
        onnx.save_model(proto, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(dest))


def graph_files(path: str | Path) -> list[Path]:
    """The graph file followed by the external data files it refers to (sorted, unique)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in _tensors(proto.graph) if uses_external_data(t)}
    return [path, *(path.parent / n for n in sorted(names))]


def _tensors(graph: Any) -> Any:
    """Every tensor a graph holds: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def graph_sha256(path: str | Path) -> str:
    """Hex sha256 over the graph and its external data (what an engine built from it depends on)."""
    from lssr_ray.model.fingerprint import files_sha256

    files = graph_files(path)
    return files_sha256(files[0].parent, files)


def cached_export(ref: Any, *, batch_size: int, chip_size: int, cache_dir: str | Path | None = None) -> Path:
    """The graph of :class:`~lssr_ray.model.checkpoint.CheckpointRef` ``ref`` (merged, fixed
    shapes) in ``<cache>/onnx/<key>/model.onnx``, exported on this node if missing.

    ``key`` hashes the base and adapter fingerprints (cached next to their weights), the seed,
    the shapes and :data:`~lssr_ray.model.lssr.GRAPH_REVISION`. The folder appears atomically
    (written aside, then renamed): concurrent exporters on one node never see half a graph.
    """
    import warnings

    from lssr_ray.model.base import default_cache_dir
    from lssr_ray.model.lssr import GRAPH_REVISION, LSSRModel

    key = hashlib.sha256(json.dumps([ref.base_sha256(), ref.adapter_sha256(), int(ref.seed), int(batch_size),
                                     int(chip_size), GRAPH_REVISION]).encode()).hexdigest()[:20]
    folder = Path(cache_dir or default_cache_dir()) / "onnx" / key
    if (folder / GRAPH_FILE).is_file():
        return folder / GRAPH_FILE
    tmp = folder.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    model = LSSRModel.from_ref(ref).merge_for_inference()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic (shapes are fixed)
        export_onnx(model, tmp / GRAPH_FILE, batch_size=batch_size, chip_size=chip_size)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process on this node finished first: use its (identical) graph
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / GRAPH_FILE).is_file():
            raise
    return folder / GRAPH_FILE


def max_abs_diff(model: Any, engine: Any, inputs: dict[str, np.ndarray]) -> float:
    """max |torch - engine| of the output image on the given network inputs
    (:func:`~lssr_ray.data.batch.preprocess` output)."""
    import torch

    with torch.inference_mode():
        ref = model.forward_batch(inputs).float().cpu().numpy()
    return float(np.abs(ref - engine(inputs)).max())


__all__ = [
    "EXTERNAL_DATA_OVER",
    "GRAPH_FILE",
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAME",
    "cached_export",
    "example_inputs",
    "export_onnx",
    "graph_files",
    "graph_sha256",
    "max_abs_diff",
]
