"""Plain residual CNN baseline: bicubic x3 upsampling plus a small learned correction.

The yardstick LSSR has to beat besides bicubic itself: trained on the same pairs with the same
loss (:class:`lssr_ray.model.losses.LSSRLoss`), no diffusion prior, no aux layers, no SAR.

``forward(lr)``: ``lr`` (B, 6, h, w) images in [-1, 1] (the band-group scaling of
:mod:`lssr_ray.data.normalize`, e.g. ``preprocess(batch)["lr"]`` of :mod:`lssr_ray.data.batch`)
-> (B, 6, scale*h, scale*w) images in [-1, 1], OUTPUT_BANDS order. The body (an EDSR-like
stack of residual conv blocks) works on the bicubic image at 10 m; its last conv is zero at
init, so an untrained model returns exactly the (clamped) bicubic image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from lssr_ray.config import SCALE
from lssr_ray.errors import ConfigError


class _ResBlock(nn.Module):
    def __init__(self, ch: int, res_scale: float) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.c2(F.relu(self.c1(x)))


class ResidualCNN(ModelMixin, ConfigMixin):
    """Bicubic x ``scale`` + residual CNN (``channels`` wide, ``num_blocks`` residual blocks).

    ``in_channels``: bands (6, OUTPUT_BANDS order). Default size: 6 blocks x 48 channels,
    about 0.25 M parameters; ``save_pretrained``/``from_pretrained`` give a checkpoint folder.
    """

    @register_to_config
    def __init__(self, in_channels: int = 6, channels: int = 48, num_blocks: int = 6, scale: int = SCALE,
                 res_scale: float = 0.1) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("channels", channels), ("scale", scale)):
            if int(v) < 1:
                raise ConfigError(f"ResidualCNN {name}={v}: must be a positive integer")
        if int(num_blocks) < 0:
            raise ConfigError(f"ResidualCNN num_blocks={num_blocks}: must be >= 0")
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(channels, res_scale) for _ in range(num_blocks)])
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # identity (bicubic) at init
        nn.init.zeros_(self.tail.bias)

    def upsample(self, lr: torch.Tensor) -> torch.Tensor:
        """Bicubic x scale (align_corners False), the same as the evaluation's bicubic column."""
        return F.interpolate(lr, scale_factor=self.config.scale, mode="bicubic", align_corners=False)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] != self.config.in_channels:
            raise ConfigError(f"ResidualCNN input shape {tuple(lr.shape)}: expected (B, {self.config.in_channels}, h, w)")
        up = self.upsample(lr)
        f = self.head(up)
        return (up + self.tail(self.body(f) + f)).clamp(-1, 1)


__all__ = ["ResidualCNN"]
