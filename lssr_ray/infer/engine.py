"""The inference Engine protocol and a factory that picks a backend by name.

An engine maps a batch dict (see ``docs/ARCHITECTURE.md``, "The batch contract") to an output
dict: it reads the model inputs :data:`MODEL_INPUTS` (``lr`` (B, 6, h, w) float32 reflectance,
``dem``, ``landcover``, ``sar`` on the 10 m chip grid, ``month`` (B,), ``present`` (B, 3)),
ignores other keys (``chip_id``, ...), and returns ``{"sr": (B, 6, 3h, 3w) float32}``.
It is what a Ray Data ``map_batches`` actor holds: built once in ``__init__``, called per batch.

Kinds are strings that can grow: ``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, ``"bicubic"``
(no model: x3 bicubic upsampling, for dry runs and pipeline tests) and ``"auto"`` (TensorRT when
it imports and a CUDA GPU is present, else onnxruntime; torch when only a torch module is given;
never bicubic). Backends are imported only when their kind is asked for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lssr_ray.errors import BatchError, ConfigError

MODEL_INPUTS: tuple[str, ...] = ("lr", "dem", "landcover", "sar", "month", "present")
"""Batch keys every engine feeds to the model, in this order."""
MODEL_OUTPUT = "sr"
"""Output key: (B, 6, 3h, 3w) float32 10 m reflectance."""
INPUT_DTYPES: dict[str, str] = {
    "lr": "float32",
    "dem": "float32",
    "landcover": "int64",
    "sar": "float32",
    "month": "int64",
    "present": "float32",
}
"""dtype of each model input (the batch contract)."""
ENGINE_KINDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt", "bicubic")
"""Accepted ``kind`` values of :func:`make_engine`."""


@runtime_checkable
class Engine(Protocol):
    """A batch-in, batch-out inference backend."""

    name: str
    """Backend name (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``)."""
    batch_size: int
    """Chips per model call; bigger batches are split, short ones padded where needed."""
    chip_shape: tuple[int, int]
    """(h, w) of ``lr`` in input (30 m) pixels; outputs are (3h, 3w)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"lr": ..., ...}`` -> ``{"sr": float32 (B, 6, 3h, 3w)}``."""
        ...


def model_inputs(
    batch: Mapping[str, Any], names: tuple[str, ...] = MODEL_INPUTS
) -> dict[str, np.ndarray]:
    """The model inputs of ``batch`` as contiguous arrays of the contract dtypes.

    Raises :class:`BatchError` naming missing keys or an inconsistent batch size.
    """
    missing = [k for k in names if k not in batch]
    if missing:
        raise BatchError(f"batch lacks model inputs {missing}; an engine needs {list(names)}")
    out = {k: np.ascontiguousarray(batch[k], dtype=INPUT_DTYPES.get(k, None)) for k in names}
    sizes = {k: v.shape[0] if v.ndim else -1 for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise BatchError(f"batch arrays disagree on the leading (batch) dimension: {sizes}")
    return out


def pad_batch(arrays: Mapping[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray], int]:
    """Pad every array to ``size`` rows by repeating the last row; returns (padded, real rows).

    Repeating a real row (rather than zeros) keeps padded rows in the model's normal input range.
    """
    n = next(iter(arrays.values())).shape[0]
    if n > size:
        raise ConfigError(f"pad_batch: {n} rows exceed the compiled batch size {size}")
    if n == size:
        return dict(arrays), n
    idx = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
    return {k: v[idx] for k, v in arrays.items()}, n


def run_in_batches(
    fn: Any, arrays: Mapping[str, np.ndarray], batch_size: int, *, pad: bool
) -> np.ndarray:
    """Call ``fn(dict) -> array`` on slices of ``batch_size`` rows and concatenate the results.

    With ``pad`` a short last slice is padded to ``batch_size`` and the output sliced back.
    """
    n = next(iter(arrays.values())).shape[0]
    outs = []
    for start in range(0, n, batch_size):
        part = {k: v[start : start + batch_size] for k, v in arrays.items()}
        rows = next(iter(part.values())).shape[0]
        if pad and rows < batch_size:
            part, rows = pad_batch(part, batch_size)
        outs.append(np.asarray(fn(part))[:rows])
    return np.concatenate(outs, axis=0) if outs else np.zeros((0,), "float32")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_kind(kind: str, *, onnx_path: Any = None, torch_module: Any = None) -> str:
    """The concrete backend ``make_engine(kind)`` would build on this host."""
    kind = str(kind).lower()
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"unknown engine kind {kind!r}; valid: {list(ENGINE_KINDS)}")
    if kind != "auto":
        return kind
    if onnx_path is None and torch_module is not None:
        return "torch"
    if importlib.util.find_spec("tensorrt") is not None and _cuda_available():
        return "tensorrt"
    return "onnxruntime"


def make_engine(
    kind: str = "auto",
    *,
    onnx_path: str | Path | None = None,
    torch_module: Any = None,
    batch_size: int | None = None,
    chip_shape: tuple[int, int] | None = None,
    device: str | None = None,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Engine:
    """Build an engine.

    Args:
        kind: one of :data:`ENGINE_KINDS` (``bicubic`` needs neither a module nor a graph).
        onnx_path: the exported model (onnxruntime, tensorrt).
        torch_module: an ``nn.Module`` or callable ``f(lr, dem, landcover, sar, month, present)``
            (torch).
        batch_size: chips per call; for ONNX models with a fixed batch dimension it is read
            from the model.
        chip_shape: (h, w) input pixels; read from the model when it is fixed there.
        device: torch device for the torch engine (default ``"cpu"``).
        providers: onnxruntime execution providers (default: the best available).
        intra_op_threads: onnxruntime intra-op threads (default: ``OMP_NUM_THREADS`` or the
            CPUs this process may use).
        cache_dir: where TensorRT engines (and onnxruntime TensorRT EP caches) are kept.
    """
    concrete = resolve_kind(kind, onnx_path=onnx_path, torch_module=torch_module)
    if concrete == "bicubic":
        from lssr_ray.infer.bicubic_engine import BicubicEngine

        return BicubicEngine(batch_size=batch_size or 8, chip_shape=chip_shape or (64, 64))
    if concrete == "torch":
        if torch_module is None:
            raise ConfigError("engine kind 'torch' needs torch_module=<nn.Module or callable>")
        from lssr_ray.infer.torch_engine import TorchEngine

        return TorchEngine(
            torch_module,
            batch_size=batch_size or 8,
            chip_shape=chip_shape or (64, 64),
            device=device or "cpu",
        )
    if onnx_path is None:
        raise ConfigError(f"engine kind {concrete!r} needs onnx_path=<exported .onnx file>")
    if concrete == "onnxruntime":
        from lssr_ray.infer.ort_engine import OrtEngine

        return OrtEngine(
            onnx_path,
            batch_size=batch_size,
            chip_shape=chip_shape,
            providers=providers,
            intra_op_threads=intra_op_threads,
            cache_dir=cache_dir,
        )
    from lssr_ray.infer.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(
        onnx_path, batch_size=batch_size, chip_shape=chip_shape, cache_dir=cache_dir
    )


__all__ = [
    "ENGINE_KINDS",
    "INPUT_DTYPES",
    "MODEL_INPUTS",
    "MODEL_OUTPUT",
    "Engine",
    "make_engine",
    "model_inputs",
    "pad_batch",
    "resolve_kind",
    "run_in_batches",
]
