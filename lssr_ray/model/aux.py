"""Auxiliary-knowledge fusion: DEM, land cover and month -> cross-attention into the image latent.

Shapes (B chips, latent edge h = H / 8 for the SD VAE):
- DEM: (B, 2, H, W) float, from :func:`lssr_ray.data.normalize.normalize_dem` (relief, absolute).
- land cover: (B, 1, H, W) int64 class index into ``lssr_ray/data/landcover_classes.csv``
  (0 = unknown); ids >= ``num_landcover_classes`` are treated as 0. Learned embedding, not the
  raw id as a number (the reference design fed the id as a float).
- month: (B,) int64 1..12, encoded cyclically as (sin, cos)(2 pi (m - 1) / 12) -> MLP (all 12
  months; the reference had a 5-entry table).
- present: (B, 3) float, 1 where dem / landcover / sar exist. A missing modality's features are
  replaced by a learned "missing" vector, so a chip without DEM still has a well-defined input.

Knowledge tokens (DEM + land cover features + month vector, each with a 2D sine position code)
are the keys/values of a multi-head cross-attention whose queries are the image latent tokens;
the result is projected to the latent channels and added through a learned per-group gate
(tanh, one per band group). The projection starts at zero, so untrained fusion leaves the latent
unchanged (the model starts at bicubic); the gate then starts at 1 (tanh 0.76) so the projection's
first gradients are not scaled down.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def sine_position_code(h: int, w: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sine/cosine position code, (h*w, dim); dim must be a multiple of 4."""
    quarter = dim // 4
    freq = torch.exp(-math.log(1000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq[None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq[None]
    py = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    px = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([py, px], -1).reshape(h * w, 4 * quarter).to(dtype or torch.float32)


def _down_cnn(cin: int, dim: int, n_down: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    ch = cin
    widths = [max(8, dim // 2 ** (n_down - i)) for i in range(n_down)]
    for wdt in widths:
        layers += [nn.Conv2d(ch, wdt, 3, stride=2, padding=1), nn.SiLU()]
        ch = wdt
    layers.append(nn.Conv2d(ch, dim, 3, padding=1))
    return nn.Sequential(*layers)


class AuxFusion(ModelMixin, ConfigMixin):
    """Cross-attention fusion of auxiliary knowledge into VAE latents (saves like a diffusers model)."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        dim: int = 64,
        num_heads: int = 4,
        downsample: int = 8,
        dem_channels: int = 2,
        num_landcover_classes: int = 32,
        landcover_embed_dim: int = 8,
        num_groups: int = 2,
        gate_init: float = 1.0,
    ) -> None:
        super().__init__()
        n_down = round(math.log2(downsample))
        self.dem_encoder = _down_cnn(dem_channels, dim, n_down)
        self.lc_embed = nn.Embedding(num_landcover_classes, landcover_embed_dim)
        self.lc_encoder = _down_cnn(landcover_embed_dim, dim, n_down)
        self.month_mlp = nn.Sequential(nn.Linear(2, dim), nn.SiLU(), nn.Linear(dim, dim))
        # learned stand-ins for a missing modality: dem, landcover
        self.missing = nn.Parameter(torch.zeros(2, dim))
        self.q_in = nn.Conv2d(latent_channels, dim, 1)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.out = nn.Conv2d(dim, latent_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.gate = nn.Parameter(torch.full((num_groups,), float(gate_init)))

    def knowledge(
        self, dem: torch.Tensor, landcover: torch.Tensor, month: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        """Knowledge tokens (B, h*w, dim) from the aux rasters; see the module docstring for inputs."""
        ncls = self.config.num_landcover_classes
        lc = landcover[:, 0].long()
        lc = torch.where((lc >= 0) & (lc < ncls), lc, torch.zeros_like(lc))
        f_dem = self.dem_encoder(dem)
        f_lc = self.lc_encoder(self.lc_embed(lc).permute(0, 3, 1, 2))
        p_dem = present[:, 0].view(-1, 1, 1, 1)
        p_lc = present[:, 1].view(-1, 1, 1, 1)
        f_dem = p_dem * f_dem + (1 - p_dem) * self.missing[0].view(1, -1, 1, 1)
        f_lc = p_lc * f_lc + (1 - p_lc) * self.missing[1].view(1, -1, 1, 1)
        ang = 2 * math.pi * (month.to(f_dem.dtype) - 1.0) / 12.0
        f_month = self.month_mlp(torch.stack([ang.sin(), ang.cos()], -1))
        k = f_dem + f_lc + f_month[:, :, None, None]
        _b, c, h, w = k.shape
        pos = sine_position_code(h, w, c, device=k.device, dtype=k.dtype)
        return k.flatten(2).transpose(1, 2) + pos[None]

    def forward(
        self,
        latents: torch.Tensor,
        dem: torch.Tensor,
        landcover: torch.Tensor,
        month: torch.Tensor,
        present: torch.Tensor,
    ) -> torch.Tensor:
        """latents (G*B, C, h, w), G band groups stacked group-major ([rgb chips; ir chips]);
        aux inputs for the B chips -> fused latents, same shape."""
        gb, _c, h, w = latents.shape
        kv = self.knowledge(dem, landcover, month, present)
        b = kv.shape[0]
        groups = gb // b
        kv = self.norm_kv(kv).repeat(groups, 1, 1)
        q = self.q_in(latents).flatten(2).transpose(1, 2)
        q = self.norm_q(q + sine_position_code(h, w, q.shape[-1], device=q.device, dtype=q.dtype)[None])
        att, _ = self.attn(q, kv, kv, need_weights=False)
        delta = self.out(att.transpose(1, 2).reshape(gb, -1, h, w))
        gate = torch.tanh(self.gate[:groups]).repeat_interleave(b).view(gb, 1, 1, 1)
        return latents + gate * delta


__all__ = ["AuxFusion", "sine_position_code"]
