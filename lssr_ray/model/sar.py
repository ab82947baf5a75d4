"""SAR guidance: a gated, windowed cross-attention head applied after VAE decoding.

Optical image features are the queries and Sentinel-1 (VV, VH) features the keys/values, inside
non-overlapping ``window`` x ``window`` pixel windows (10 m pixels; 12 -> 120 m windows). The
result is a residual correction ``opt + present * gamma * out_proj(fused)``: a chip with no SAR
(``present`` 0) passes through unchanged, so SAR can be missing at inference. ``out_proj`` starts
at zero, so an untrained head is the identity (the model starts at bicubic).

The windowed attention runs through torch's fused ``scaled_dot_product_attention``: a 192 x 192
chip has 256 windows x 2 band groups x 4 heads x 144 x 144 scores, which the explicit
``softmax(q k^T) v`` held as one 162 MiB tensor; the fused kernel never materialises it.

Shapes: optical (N, 3, H, W) image in [-1, 1] (N = groups x chips, group-major), SAR (B, 2, H, W)
from :func:`lssr_ray.data.normalize.normalize_sar`, present (B,) float. H and W must be
multiples of ``window`` (192 = 16 x 12).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from lssr_ray.errors import ConfigError


def _to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n * (h // ws) * (w // ws), ws * ws, c)


def _from_windows(t: torch.Tensor, n: int, h: int, w: int, ws: int) -> torch.Tensor:
    c = t.shape[-1]
    t = t.reshape(n, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(n, c, h, w)


class _WindowCrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        # per-window gate from the SAR content: lets the head ignore windows where SAR is noise
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.Sigmoid())
        self.gamma = nn.Parameter(torch.tensor(0.1))
        self.norm_mlp = nn.LayerNorm(dim)
        hid = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hid), nn.GELU(), nn.Linear(hid, dim))

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        m, t, c = opt.shape
        hd = c // self.heads
        s = self.norm_kv(sar)
        q = self.q(self.norm_q(opt)).reshape(m, t, self.heads, hd).transpose(1, 2)
        k, v = self.kv(s).reshape(m, t, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(hd), no mask
        fused = self.proj(att.transpose(1, 2).reshape(m, t, c))
        g = self.gate(s.mean(dim=1, keepdim=True))
        x = opt + self.gamma * g * fused
        return x + self.mlp(self.norm_mlp(x))


class SARHead(ModelMixin, ConfigMixin):
    """Gated windowed optical<-SAR cross-attention head (saves like a diffusers model)."""

    @register_to_config
    def __init__(
        self,
        opt_channels: int = 3,
        sar_channels: int = 2,
        dim: int = 32,
        num_heads: int = 4,
        num_layers: int = 1,
        window: int = 12,
        mlp_ratio: float = 2.0,
        gamma_init: float = 1.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"SARHead dim {dim} must be a multiple of num_heads {num_heads}")
        self.opt_in = nn.Sequential(nn.Conv2d(opt_channels, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.sar_in = nn.Sequential(nn.Conv2d(sar_channels, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.blocks = nn.ModuleList(_WindowCrossBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers))
        self.out_proj = nn.Conv2d(dim, opt_channels, 1)
        nn.init.zeros_(self.out_proj.weight)  # identity at init: the correction starts at 0
        nn.init.zeros_(self.out_proj.bias)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    def forward(self, opt: torch.Tensor, sar: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """opt (G*B, 3, H, W), sar (B, 2, H, W), present (B,) -> corrected opt (G*B, 3, H, W)."""
        n, _, h, w = opt.shape
        ws = self.config.window
        if h % ws or w % ws:
            raise ConfigError(f"SARHead: image {h}x{w} is not a multiple of window {ws}")
        b = sar.shape[0]
        groups = n // b
        f_opt = _to_windows(self.opt_in(opt), ws)
        f_sar = _to_windows(self.sar_in(sar), ws).repeat(groups, 1, 1)
        for blk in self.blocks:
            f_opt = blk(f_opt, f_sar)
        delta = self.out_proj(_from_windows(f_opt, n, h, w, ws))
        p = present.repeat(groups).view(n, 1, 1, 1).to(opt.dtype)
        return opt + p * self.gamma * delta


__all__ = ["SARHead"]
