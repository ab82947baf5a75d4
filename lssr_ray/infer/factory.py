"""Build an engine by kind: ``torch``, ``onnxruntime``, ``tensorrt``, ``bicubic`` or ``auto``.

``bicubic`` needs no model (x3 bicubic upsampling, for dry runs and pipeline tests). ``auto``
means the exported graph's fastest runner when there is a graph (TensorRT when it imports and a
CUDA GPU is present, else onnxruntime) and torch when there is none; never bicubic. Backends are
imported only when their kind is built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lssr_ray.errors import ConfigError
from lssr_ray.infer.base import Engine

ENGINE_KINDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt", "bicubic")
"""Accepted ``kind`` values of :func:`make_engine`."""
GRAPH_KINDS: tuple[str, ...] = ("onnxruntime", "tensorrt")
"""Kinds that run an exported ONNX graph."""


def cuda_available() -> bool:
    """A CUDA GPU torch can use (False without torch installed, without importing it)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_kind(kind: str, *, with_graph: bool = True) -> str:
    """The concrete backend ``kind`` means on this host; ``with_graph``: an exported ONNX graph
    is (or will be) there for ``auto`` to run."""
    kind = str(kind).lower()
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"unknown engine kind {kind!r}; valid: {list(ENGINE_KINDS)}")
    if kind != "auto":
        return kind
    if not with_graph:
        return "torch"
    if importlib.util.find_spec("tensorrt") is not None and cuda_available():
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
    precision: str = "auto",
) -> Engine:
    """Build an engine.

    Args:
        kind: one of :data:`ENGINE_KINDS` (``auto``: see the module docstring; it runs
            ``onnx_path`` when given, else ``torch_module``).
        onnx_path: the exported graph (onnxruntime, tensorrt).
        torch_module: an ``nn.Module`` or callable ``f(lr=, dem=, landcover=, sar=, month=,
            present=) -> image`` (torch).
        batch_size: chips per call; for ONNX models with a fixed batch dimension it is read
            from the model.
        chip_shape: (h, w) input pixels; read from the model when it is fixed there.
        device: torch device for the torch engine (default ``"cpu"``).
        providers: onnxruntime execution providers (default: the best available).
        intra_op_threads: onnxruntime intra-op threads (default: ``OMP_NUM_THREADS`` or the
            CPUs this process may use).
        cache_dir: where TensorRT engines (and onnxruntime TensorRT EP caches) are kept.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` for torch on a GPU (autocast; CPU
            stays fp32) and the TensorRT build (``auto`` = fp16 there); onnxruntime runs the
            graph as exported (float32).
    """
    concrete = resolve_kind(kind, with_graph=onnx_path is not None)
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
            precision=precision,
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
        onnx_path, batch_size=batch_size, chip_shape=chip_shape, cache_dir=cache_dir,
        precision="fp16" if precision == "auto" else precision,
    )


__all__ = ["ENGINE_KINDS", "GRAPH_KINDS", "cuda_available", "make_engine", "resolve_kind"]
