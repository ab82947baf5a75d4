"""onnxruntime engine: one InferenceSession, execution providers chosen by availability.

The project's one ONNX runner: the mapping actors, the export parity checks
(:func:`lssr_ray.infer.export.max_abs_diff`) and the benchmarks all run graphs through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.data.batch import model_inputs
from lssr_ray.errors import BatchError, ConfigError, MissingDataError
from lssr_ray.infer.base import run_in_batches, single_output

PROVIDER_PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
"""Providers tried in this order; only those the installed onnxruntime offers are used."""

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def default_threads() -> int:
    """Intra-op threads: ``OMP_NUM_THREADS`` (Ray sets it to the actor's CPUs), else the CPUs
    this process may run on. Explicit, because onnxruntime's default grabs every core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


class OrtEngine:
    """Runs an exported network (inputs named as :func:`~lssr_ray.data.batch.preprocess`'s,
    one image output) with onnxruntime.

    A model exported with a fixed batch dimension is always called with exactly that many rows:
    a short last batch is padded (last row repeated) and the output sliced back. With a dynamic
    batch dimension, batches are split into ``batch_size`` rows and not padded unless the
    TensorRT provider is in use (fixed shapes avoid engine rebuilds there).
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        batch_size: int | None = None,
        chip_shape: tuple[int, int] | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        cache_dir: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise MissingDataError(
                f"ONNX model not found: {path}; export one with lssr_ray.infer.export"
            )
        available = list(ort.get_available_providers())
        if providers is None:
            chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        else:
            bad = [p for p in providers if p not in available]
            if bad:
                raise ConfigError(
                    f"onnxruntime providers {bad} are not available; available: {available}"
                )
            chosen = list(providers)
        opts: list[Any] = []
        for p in chosen:
            if p == "TensorrtExecutionProvider":
                o = {"trt_fp16_enable": True}
                if cache_dir is not None:
                    o.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
                opts.append((p, o))
            else:
                opts.append(p)
        so = ort.SessionOptions()
        self.intra_op_threads = int(intra_op_threads or default_threads())
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = int(inter_op_threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=opts)
        self.providers: list[str] = list(self.session.get_providers())

        inputs = self.session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(i.name for i in inputs)
        self._dtypes = {i.name: _ORT_DTYPES.get(i.type, "float32") for i in inputs}
        self.output_name = single_output([o.name for o in self.session.get_outputs()], path.name)

        lead = [i.shape[0] for i in inputs if i.shape]
        fixed = next((d for d in lead if isinstance(d, int) and d > 0), None)
        if fixed is not None and batch_size not in (None, fixed):
            raise ConfigError(
                f"{path.name} was exported with a fixed batch of {fixed}; "
                f"got batch_size={batch_size} "
                f"(re-export with a dynamic batch axis or use batch_size={fixed})"
            )
        self.fixed_batch = fixed
        self.batch_size = int(fixed or batch_size or 8)
        self.pad = fixed is not None or "TensorrtExecutionProvider" in self.providers
        lr = next((i for i in inputs if i.name == "lr"), None)
        dims = tuple(lr.shape[2:4]) if lr is not None and len(lr.shape) == 4 else ()
        if dims and all(isinstance(d, int) for d in dims):
            self.chip_shape: tuple[int, int] = (int(dims[0]), int(dims[1]))
            self._fixed_chip = True
        else:
            self.chip_shape = tuple(chip_shape or (64, 64))  # type: ignore[assignment]
            self._fixed_chip = False

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Network inputs -> image float32 (B, 6, 3h, 3w); other keys are ignored."""
        arrays = model_inputs(inputs, self.input_names)
        arrays = {k: v.astype(self._dtypes[k], copy=False) for k, v in arrays.items()}
        if self._fixed_chip and "lr" in arrays and tuple(arrays["lr"].shape[2:]) != self.chip_shape:
            raise BatchError(
                f"lr chips are {tuple(arrays['lr'].shape[2:])} px but the model was exported for "
                f"{self.chip_shape}"
            )

        def run(part: dict[str, np.ndarray]) -> np.ndarray:
            return self.session.run([self.output_name], part)[0]

        return run_in_batches(run, arrays, self.batch_size, pad=self.pad).astype("float32", copy=False)


__all__ = ["PROVIDER_PREFERENCE", "OrtEngine", "default_threads"]
