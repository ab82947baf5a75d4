"""torch engine: wraps an ``nn.Module`` (or any callable) under ``torch.inference_mode``.

Precision: on a CUDA device the module runs under ``torch.autocast`` in bf16 or fp16
(:func:`reduced_precision`; weights stay float32, so the numerically sensitive ops autocast
keeps in float32, e.g. norms and softmax, stay there); on CPU it always runs in float32 (reduced
precision matmuls are slower there, and the CPU path is the parity reference).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from lssr_ray.data.batch import MODEL_INPUTS, model_inputs
from lssr_ray.errors import ConfigError
from lssr_ray.infer.base import run_in_batches

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""``auto``: bf16 on GPUs that support it, else fp16; fp32 on CPU (as the training loop)."""


def reduced_precision(device_type: str, precision: str) -> Any:
    """The torch dtype autocast should use for ``precision`` on ``device_type`` (None: float32).

    The one reading of the ``precision`` setting, shared by inference and the training loop.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    if device_type != "cuda" or precision == "fp32":
        return None
    import torch

    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.bfloat16 if precision == "bf16" else torch.float16


class TorchEngine:
    """Calls ``module(lr=..., dem=..., landcover=..., sar=..., month=..., present=...)``.

    The module returns the image tensor (B, 6, 3h, 3w). Batches are split into ``batch_size``
    rows (no padding: eager torch takes any batch size). ``precision``: see the module docstring;
    :attr:`dtype` is what it resolved to on this device (None = float32).
    """

    name = "torch"

    def __init__(
        self,
        module: Any,
        *,
        batch_size: int = 8,
        chip_shape: tuple[int, int] = (64, 64),
        device: str = "cpu",
        precision: str = "auto",
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.dtype = reduced_precision(self.device.type, precision)
        if precision not in ("auto", "fp32") and self.dtype is None:
            log.warning("precision %s asked on %s: the CPU path runs in float32", precision, self.device)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        self.batch_size = int(batch_size)
        self.chip_shape = (int(chip_shape[0]), int(chip_shape[1]))

    def _autocast(self) -> Any:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Network inputs -> image float32 (B, 6, 3h, 3w) (:mod:`lssr_ray.infer.base`)."""
        import torch

        arrays = model_inputs(inputs, MODEL_INPUTS)

        def run(part: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode(), self._autocast():
                tensors = {k: torch.from_numpy(v).to(self.device) for k, v in part.items()}
                return self.module(**tensors).float().cpu().numpy()

        return run_in_batches(run, arrays, self.batch_size, pad=False)


__all__ = ["PRECISIONS", "TorchEngine", "reduced_precision"]
