"""torch engine: wraps an ``nn.Module`` (or any callable) under ``torch.inference_mode``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lssr_ray.data.batch import MODEL_INPUTS, model_inputs
from lssr_ray.infer.base import run_in_batches


class TorchEngine:
    """Calls ``module(lr=..., dem=..., landcover=..., sar=..., month=..., present=...)``.

    The module returns the image tensor (B, 6, 3h, 3w). Batches are split into ``batch_size``
    rows (no padding: eager torch takes any batch size).
    """

    name = "torch"

    def __init__(
        self,
        module: Any,
        *,
        batch_size: int = 8,
        chip_shape: tuple[int, int] = (64, 64),
        device: str = "cpu",
    ) -> None:
        import torch

        self.device = torch.device(device)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        self.batch_size = int(batch_size)
        self.chip_shape = (int(chip_shape[0]), int(chip_shape[1]))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Network inputs -> image float32 (B, 6, 3h, 3w) (:mod:`lssr_ray.infer.base`)."""
        import torch

        arrays = model_inputs(inputs, MODEL_INPUTS)

        def run(part: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                tensors = {k: torch.from_numpy(v).to(self.device) for k, v in part.items()}
                return self.module(**tensors).float().cpu().numpy()

        return run_in_batches(run, arrays, self.batch_size, pad=False)


__all__ = ["TorchEngine"]
