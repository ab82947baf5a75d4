"""What an inference engine is, what flows through it, and the batching helpers engines share.

An engine runs the *network* only. Around it sits the numpy batch contract of
:mod:`lssr_ray.data.batch`, the same for every engine::

    inputs = preprocess(batch)            # reflectance -> network inputs + valid mask
    image = engine(inputs)                # network inputs -> image (B, 6, H, W)
    sr = postprocess(image, inputs["valid"])   # image -> reflectance, nodata restored

which :func:`super_resolve` does in one call. ``engine(inputs)`` reads the network inputs
:data:`~lssr_ray.data.batch.MODEL_INPUTS` (``lr`` (B, 6, h, w) float32 images in [-1, 1],
``dem`` (B, 2, H, W), ``landcover`` (B, 1, H, W) int64, ``sar`` (B, 2, H, W), ``month`` (B,)
int64, ``present`` (B, 3); H = scale * h), ignores other keys (``valid``, ``chip_id``), and
returns the network's image (B, 6, H, W) float32 in image units (the model clamps it to
:func:`~lssr_ray.data.normalize.valid_image_range`). An engine is what a Ray Data
``map_batches`` actor holds: built once (:func:`lssr_ray.infer.factory.make_engine`), called per
batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lssr_ray.config import SCALE
from lssr_ray.data.batch import postprocess, preprocess
from lssr_ray.errors import ConfigError


@runtime_checkable
class Engine(Protocol):
    """A network-inputs-in, image-out inference backend (see the module docstring)."""

    name: str
    """Backend name (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, ``"bicubic"``)."""
    batch_size: int
    """Chips per network call; bigger batches are split, short ones padded where needed."""
    chip_shape: tuple[int, int]
    """(h, w) of ``lr`` in input (30 m) pixels; outputs are (scale h, scale w)."""

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Network inputs (:func:`~lssr_ray.data.batch.preprocess` output) -> image (B, 6, H, W)
        float32."""
        ...


def super_resolve(engine: Engine, batch: Mapping[str, Any], *, scale: int = SCALE) -> np.ndarray:
    """Batch-contract reflectance -> 10 m reflectance (B, 6, scale h, scale w) float32 through
    ``engine``: :func:`~lssr_ray.data.batch.preprocess`, the network, then
    :func:`~lssr_ray.data.batch.postprocess` (NaN on the children of invalid 30 m pixels)."""
    inputs = preprocess(batch, scale=scale)
    return postprocess(engine(inputs), inputs["valid"], scale=scale)


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
    fn: Callable[[dict[str, np.ndarray]], Any], arrays: Mapping[str, np.ndarray], batch_size: int, *, pad: bool
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


def single_output(names: list[str], source: Any) -> str:
    """The name of a graph's one output; an engine returns one image, so more is an error."""
    if len(names) != 1:
        raise ConfigError(f"{source} has outputs {names}; an LSSR graph has exactly one (the image)")
    return names[0]


__all__ = ["Engine", "pad_batch", "run_in_batches", "single_output", "super_resolve"]
