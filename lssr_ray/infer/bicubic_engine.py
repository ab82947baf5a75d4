"""bicubic engine: x3 bicubic upsampling of the 30 m input, no model.

The same interface as the LSSR engines, so a whole mapping run can be driven cheaply (dry runs,
pipeline tests with hundreds of chips, the floor any model has to beat). It upsamples exactly as
the evaluation's bicubic column and LSSRModel's first step do (``align_corners=False``, clamped
to the image range [-1, 1]).
"""

from __future__ import annotations

import functools
from typing import Any

from lssr_ray.config import SCALE
from lssr_ray.infer.torch_engine import TorchEngine


def bicubic_upsample(lr: Any, *_inputs: Any, scale: int = SCALE, **_named: Any) -> Any:
    """(B, 6, h, w) image tensor in [-1, 1] -> (B, 6, scale*h, scale*w); other model inputs ignored."""
    import torch.nn.functional as F

    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


class BicubicEngine(TorchEngine):
    """:class:`TorchEngine` around :func:`bicubic_upsample` (CPU, any batch size)."""

    name = "bicubic"

    def __init__(self, *, batch_size: int = 8, chip_shape: tuple[int, int] = (64, 64), scale: int = SCALE) -> None:
        super().__init__(functools.partial(bicubic_upsample, scale=scale), batch_size=batch_size,
                         chip_shape=chip_shape, device="cpu")


__all__ = ["BicubicEngine", "bicubic_upsample"]
