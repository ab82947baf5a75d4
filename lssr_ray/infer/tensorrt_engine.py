"""TensorRT engine: an fp16 (or bf16 / fp32) engine built from the exported ONNX graph, cached on disk.

Needs the ``gpu`` extra (TensorRT >= 10 Python API) and a CUDA GPU; TensorRT is imported only
when this engine is built. The graph is parsed from its *path* (``OnnxParser.parse_from_file``),
so weights stored as external data beside it (SD-2.1-size graphs, :mod:`lssr_ray.infer.export`)
are read from the same folder. The serialized engine is cached as ``<cache_dir>/<key>.plan``
where ``key`` = sha256 over (sha256 of the graph and its external data, input shapes, GPU name,
TensorRT version, precision): an engine is only valid for the GPU model and TensorRT release
that built it. A graph with a fixed batch gets one shape (min = opt = max) and a short last batch
is padded; a graph with a dynamic batch gets the profile 1 .. ``batch_size`` and runs any batch
up to it unpadded. Buffers are torch CUDA tensors; the engine runs on its own CUDA stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray._lazy import lazy_import
from lssr_ray.data.batch import model_inputs
from lssr_ray.errors import ConfigError, MissingDataError
from lssr_ray.infer.base import run_in_batches, single_output
from lssr_ray.infer.export import graph_sha256

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lssr_ray" / "tensorrt"
"""Where engines are cached when no ``cache_dir`` is given."""

# (channels, spatial scale relative to lr) of each contract input; None = no spatial dims
_CONTRACT = {
    "lr": (6, 1),
    "dem": (1, 3),
    "landcover": (1, 3),
    "sar": (2, 3),
    "month": (None, None),
    "present": (3, None),
}


PRECISIONS = ("fp16", "bf16", "fp32")
"""Builder precisions: ``fp16`` / ``bf16`` allow that type besides fp32 (TensorRT picks per layer)."""


def engine_cache_key(
    model_sha256: str,
    input_shapes: Mapping[str, Sequence[int]],
    *,
    gpu_name: str,
    trt_version: str,
    precision: str = "fp16",
) -> str:
    """Hex sha256 naming a cached engine (see the module docstring); ``model_sha256`` is
    :func:`~lssr_ray.infer.export.graph_sha256` of the graph."""
    meta = {
        "model_sha256": str(model_sha256),
        "shapes": {str(k): [int(d) for d in v] for k, v in sorted(input_shapes.items())},
        "gpu": str(gpu_name),
        "tensorrt": str(trt_version),
        "precision": str(precision),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def contract_shapes(
    onnx_dims: Mapping[str, Sequence[Any]], *, batch_size: int, chip_shape: tuple[int, int]
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: the model's fixed dims, dynamic ones filled from the batch contract.

    ``onnx_dims`` maps input name -> dims (int, or a str/None/<=0 for a dynamic dim).
    """
    h, w = chip_shape
    out = {}
    for name, dims in onnx_dims.items():
        chans, scale = _CONTRACT.get(name, (None, None))
        filled = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                filled.append(d)
            elif i == 0:
                filled.append(int(batch_size))
            elif i == 1 and chans is not None:
                filled.append(chans)
            elif i in (2, 3) and scale is not None:
                filled.append((h if i == 2 else w) * scale)
            else:
                raise ConfigError(
                    f"input {name!r} dim {i} is dynamic and not covered by the batch contract; "
                    f"export the model with fixed shapes"
                )
        out[name] = tuple(filled)
    return out


class TensorRTEngine:
    """Engine (:mod:`lssr_ray.infer.base`) running a cached TensorRT engine on one CUDA GPU."""

    name = "tensorrt"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        batch_size: int | None = None,
        chip_shape: tuple[int, int] | None = None,
        cache_dir: str | Path | None = None,
        precision: str = "fp16",
        device: int = 0,
        workspace_gib: int = 4,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"TensorRT precision {precision!r} is not one of {list(PRECISIONS)}")
        trt = lazy_import("tensorrt", extra="gpu")
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "the tensorrt engine needs a CUDA GPU; use kind='onnxruntime' on CPU hosts"
            )
        path = Path(onnx_path)
        if not path.is_file():
            raise MissingDataError(
                f"ONNX model not found: {path}; export one with lssr_ray.infer.export"
            )
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        dims = {
            i.name: [
                d.dim_value if d.HasField("dim_value") else None
                for d in i.type.tensor_type.shape.dim
            ]
            for i in graph.input
            if i.name not in inits
        }
        lead = next((d[0] for d in dims.values() if d and d[0]), None)
        self.dynamic_batch = lead is None
        self.batch_size = int(lead or batch_size or 8)
        lr = dims.get("lr", [])
        if len(lr) == 4 and lr[2] and lr[3]:
            chip_shape = (int(lr[2]), int(lr[3]))
        self.chip_shape = tuple(chip_shape or (64, 64))
        self.shapes = contract_shapes(dims, batch_size=self.batch_size, chip_shape=self.chip_shape)

        self.device = torch.device("cuda", device)
        gpu = torch.cuda.get_device_name(self.device)
        key = engine_cache_key(
            graph_sha256(path), self.shapes, gpu_name=gpu, trt_version=trt.__version__, precision=precision
        )
        cache = Path(cache_dir or DEFAULT_CACHE_DIR)
        cache.mkdir(parents=True, exist_ok=True)
        self.plan_path = cache / f"{key}.plan"
        logger = trt.Logger(trt.Logger.WARNING)
        if self.plan_path.is_file():
            plan = self.plan_path.read_bytes()
        else:
            plan = self._build(trt, logger, path, precision=precision, workspace_gib=workspace_gib)
            tmp = cache / f".{key}.{uuid.uuid4().hex}.tmp"
            tmp.write_bytes(plan)
            os.replace(tmp, self.plan_path)  # atomic: concurrent builders never see half a plan
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(self.device)
        self._inputs: dict[str, np.dtype] = {}
        self._outputs: dict[str, Any] = {}
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            np_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
            if self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT:
                self._inputs[tname] = np_dtype
                self._context.set_input_shape(tname, self.shapes[tname])
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            if tname in self._inputs:
                continue
            np_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
            shape = tuple(self._context.get_tensor_shape(tname))
            torch_dtype = torch.from_numpy(np.empty(0, np_dtype)).dtype
            buf = torch.empty(shape, dtype=torch_dtype, device=self.device)
            self._outputs[tname] = buf
            self._context.set_tensor_address(tname, buf.data_ptr())
        self.input_names = tuple(self._inputs)
        self.output_name = single_output(list(self._outputs), path.name)

    def _build(self, trt: Any, logger: Any, path: Path, *, precision: str, workspace_gib: int) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ConfigError(f"TensorRT cannot parse {path}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib) << 30)
        if precision != "fp32":
            config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            inp = network.get_input(i)
            s = self.shapes[inp.name]
            smallest = (1, *s[1:]) if self.dynamic_batch else s
            profile.set_shape(inp.name, smallest, s, s)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ConfigError(f"TensorRT failed to build an engine from {path} (see the log above)")
        return bytes(plan)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Network inputs -> image float32 (B, 6, 3h, 3w)."""
        import torch

        arrays = model_inputs(inputs, self.input_names)
        keep: list[Any] = []

        def run(part: dict[str, np.ndarray]) -> np.ndarray:
            with torch.cuda.stream(self._stream):
                for name, dt in self._inputs.items():
                    t = torch.from_numpy(np.ascontiguousarray(part[name], dtype=dt)).to(self.device)
                    keep.append(t)  # the engine reads it asynchronously: keep it alive
                    self._context.set_tensor_address(name, t.data_ptr())
                    if self.dynamic_batch:
                        self._context.set_input_shape(name, tuple(t.shape))
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise ConfigError("TensorRT execution failed (see the TensorRT log)")
                rows = len(part[self.input_names[0]])
                out = self._outputs[self.output_name][:rows].float().cpu()
            self._stream.synchronize()
            keep.clear()
            return out.numpy()

        return run_in_batches(run, arrays, self.batch_size, pad=not self.dynamic_batch)


__all__ = ["DEFAULT_CACHE_DIR", "PRECISIONS", "TensorRTEngine", "contract_shapes", "engine_cache_key"]
