"""ONNX export with external data (the SD-2.1-size path) and the per-node export cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))

TOL = 1e-4  # as tests/infer/test_export.py: float32 kernels differ in order


@pytest.fixture(scope="module")
def model():
    from _zero_init import randomize_zero_inits

    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.model.base import load_base
    from lssr_ray.model.lssr import LSSRModel

    torch.manual_seed(0)
    m = LSSRModel(load_base(SMALL_BASE_DIR))
    randomize_zero_inits(m, std=0.02)  # adapters, gate, fusion and SAR head act in the graph
    return m.merge_for_inference()


def test_external_data_graph_matches_torch_and_inline_graph(model, tmp_path):
    """Forced external data on the small base: a graph file with no weights in it, one weights
    file beside it, onnxruntime reads it from the path and matches torch at any batch size."""
    import onnx

    from lssr_ray.infer.export import (
        example_inputs,
        export_onnx,
        graph_files,
        graph_sha256,
        max_abs_diff,
    )
    from lssr_ray.infer.ort_engine import OrtEngine

    inline = export_onnx(model, tmp_path / "inline" / "model.onnx", batch_size=2, chip_size=16)
    ext = export_onnx(model, tmp_path / "ext" / "model.onnx", batch_size=2, chip_size=16,
                      external_data=True, dynamic_batch=True)
    files = graph_files(ext)
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    assert graph_files(inline) == [inline]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert ext.stat().st_size < weights / 10 < files[1].stat().st_size  # weights live outside the graph
    proto = onnx.load(str(ext), load_external_data=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    engine = OrtEngine(ext, batch_size=3, intra_op_threads=1)
    for b in (1, 3, 5):  # dynamic batch: one graph, any batch (split into 3-row calls)
        inputs = example_inputs(batch_size=b, chip_size=16, scale=model.config.scale, seed=b)
        assert max_abs_diff(model, engine, inputs) < TOL
    inputs = example_inputs(batch_size=2, chip_size=16, scale=model.config.scale)
    np.testing.assert_allclose(engine(inputs), OrtEngine(inline, intra_op_threads=1)(inputs), atol=TOL)

    # the engine-cache identity covers the weights file, not only the graph
    before = graph_sha256(ext)
    data = bytearray(files[1].read_bytes())
    data[100] ^= 1
    files[1].write_bytes(bytes(data))
    assert graph_sha256(ext) != before


def test_cached_export_makes_one_folder_per_identity(tmp_path):
    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.infer.export import GRAPH_FILE, cached_export
    from lssr_ray.infer.ort_engine import OrtEngine
    from lssr_ray.model.checkpoint import CheckpointRef

    ref = CheckpointRef(None, str(SMALL_BASE_DIR), 0)
    path = cached_export(ref, batch_size=2, chip_size=16, cache_dir=tmp_path)
    assert path.name == GRAPH_FILE and path.with_suffix(".json").is_file()
    stamp = path.stat().st_mtime_ns
    assert cached_export(ref, batch_size=2, chip_size=16, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == stamp  # a hit: not exported again
    other = cached_export(CheckpointRef(None, str(SMALL_BASE_DIR), 1), batch_size=2, chip_size=16,
                          cache_dir=tmp_path)
    assert other.parent != path.parent
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")] == []  # no leftovers
    assert OrtEngine(path, intra_op_threads=1).fixed_batch == 2


def test_predictor_on_a_node_without_the_graph_exports_the_same_one(tmp_path, monkeypatch):
    """Actors get the graph's path; where it is missing (another node's cache), the actor
    exports the same graph into its own cache and runs it."""
    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.infer.export import cached_export, example_inputs
    from lssr_ray.mapping.udfs import LSSRPredictor
    from lssr_ray.model.checkpoint import CheckpointRef

    monkeypatch.setenv("LSSR_CACHE", str(tmp_path / "node2"))
    pred = LSSRPredictor(engine="onnxruntime", checkpoint=None, base=str(SMALL_BASE_DIR), seed=0,
                         onnx=str(tmp_path / "node1" / "onnx" / "abc" / "model.onnx"), batch_size=2, chip_size=16)
    here = cached_export(CheckpointRef(None, str(SMALL_BASE_DIR), 0), batch_size=2, chip_size=16)
    assert here.is_relative_to(tmp_path / "node2") and here.is_file()
    assert pred.kind == "onnxruntime" and pred.engine.fixed_batch == 2
    inputs = example_inputs(batch_size=2, chip_size=16)
    from lssr_ray.infer.ort_engine import OrtEngine

    np.testing.assert_array_equal(pred.engine(inputs), OrtEngine(here, intra_op_threads=1)(inputs))
