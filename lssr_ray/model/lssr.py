"""LSSR: frozen SD + LoRA, aux cross-attention, SAR head; one deterministic denoising step.

Data flow for B chips of h x w input (30 m) pixels, H = 3h, W = 3w (10 m):

1. :func:`lssr_ray.data.batch.preprocess` (numpy, the batch contract): NaN-fill the 30 m
   reflectance (per chip and band mean), scale to [-1, 1] per band group
   (:mod:`lssr_ray.data.normalize`), normalise DEM / SAR, and AND the given ``present`` flags
   with "the layer has any finite value".
2. :class:`LSSRModel` (torch, the part exported to ONNX): bicubic x3 upsampling ``up``; RGB and
   IR are two 3-channel images batched together ([rgb chips; ir chips]); VAE encode (latent
   *mean*, deterministic) x scaling factor -> ``z``; aux fusion -> ``z'``; one UNet pass at the
   fixed ``timestep`` used in training and inference alike, ``eps = unet(z', t, empty prompt)``;
   then (``skip="pixel"``, the default)

       out = up + Dec(z' - g * eps) - Dec(z)

   with a learned per-group gate ``g`` that starts at 0. The VAE's reconstruction error is in
   both decodes and cancels, so the output is the bicubic image plus what the adapters add: with
   untrained adapters (g = 0, zero fusion and SAR outputs) it *is* the bicubic image, and a weak
   VAE no longer caps quality. ``skip="latent"`` is the earlier ``Dec(z' - eps)``, kept so that
   checkpoints written before it load and behave as trained. Then the SAR head (residual, zero at
   init), the optional colour fix at inference (``color_fix``, :mod:`lssr_ray.model.colorfix`),
   and a clamp to the image values of HLS's valid reflectance range (-0.01 .. 1.6,
   :func:`~lssr_ray.data.normalize.valid_image_range`), not to [-1, 1]: image -1 is
   reflectance 0, so that clamp turned slightly negative predictions into exact zeros.
3. :func:`lssr_ray.data.batch.postprocess`: back to reflectance, NaN on the 3 x 3 children of
   every 30 m pixel that had any NaN band (nodata in -> nodata out; filled values never leak NaN
   elsewhere).

:class:`lssr_ray.model.pipeline.LSSRPipeline` is inference only (adapters merged into the UNet)
with one ``__call__`` on the batch dict of docs/ARCHITECTURE.md.

Differences from the reference design (arXiv 2510.23382 and its authors' code) and why:

- No text encoder or prompts: one fixed empty-prompt embedding stored with the base and the
  checkpoint (the reference ran CLIP on RAM-generated tags each step; satellite tags add little
  and the encoder is ~340 M parameters at inference).
- VAE encode uses the latent mean (reference: a random sample) -> deterministic output.
- One timestep for training and inference (config ``timestep``, default 1 as the reference's
  inference value; its training timestep was a separate argument).
- One LoRA adapter (rank 8) over the reference's layers (attention, transformer projections,
  resnet and resampler convs, feed-forward, conv_in/out) instead of six (encoder/decoder/other x
  pixel/semantic): without the semantic stage's pretrained losses a second adapter adds nothing
  (:mod:`lssr_ray.model.adapters`); several named adapters and a weighted merge still work.
- A pixel-space skip (above; the reference decodes ``z - eps`` directly): it makes the untrained
  model exactly bicubic and cancels the VAE's reconstruction error.
- Aux fusion: DEM as robust relief + absolute height (reference: clamped 0-300 m), land cover
  through an embedding (reference: raw id as a float), month as (sin, cos) of all 12 months
  (reference: a 5-entry table), 2D position codes on queries and keys (reference: none, so
  attention could not tell where a DEM feature was), a zero-initialised output projection with
  per-group tanh gates (reference: random projection, scalars at 1.0), presence flags with learned "missing" vectors and modality dropout
  (reference: every layer required).
- SAR head: same structure (conv stems, windowed optical<-SAR cross-attention with a SAR-driven
  gate, residual out-projection), smaller by default (dim 32, 1 layer, 4 heads vs 96, 2, 6; set
  ``sar_head=`` to change), fixed dB scaling (reference: per-tile maximum), gated by the SAR
  presence flag, output clamped to [-1, 1].
- Losses: LPIPS only from a local TorchScript file, no CSD (both need pretrained networks).
- No tiled VAE: chips are 192 x 192 and blending is done by the mapper. The colour fix (AdaIN or
  wavelet, as the reference) is optional (``color_fix``), off by default; docs/TRAINING.md compares.

Checkpoint folder (:meth:`LSSRModel.save_pretrained`, read by :meth:`LSSRModel.from_pretrained`): ``lssr_config.json`` (settings + base
URI and fingerprint), ``adapters/`` (LoRA weights only), ``fusion/`` and ``sar_head/``
(diffusers ``save_pretrained``), ``prompt_embeds.safetensors`` (the empty-prompt embedding),
``detail_gate.safetensors`` (the gate ``g``; pixel skip only).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lssr_ray.config import SCALE
from lssr_ray.data.normalize import valid_image_range
from lssr_ray.errors import ConfigError, MissingDataError
from lssr_ray.model.adapters import AdapterConfig
from lssr_ray.model.checkpoint import CONFIG_NAME, CheckpointRef

GRAPH_REVISION = 3
"""Revision of :meth:`LSSRModel.forward`'s graph; part of the key of cached ONNX exports, so a
change here (2: output clamped to HLS's valid range instead of [-1, 1]; 3: pixel-space skip)
re-exports them."""
GATE_FILE = "detail_gate.safetensors"
SKIPS = ("pixel", "latent")


@dataclass(frozen=True)
class LSSRConfig:
    """Model settings that are not weights; saved as ``lssr_config.json``."""

    timestep: int = 1
    """UNet timestep of the single step, the same in training and inference (reference: 1)."""
    scale: int = SCALE
    """Output / input pixel ratio (30 m -> 10 m)."""
    modality_dropout: float = 0.2
    """Training only: probability of dropping each aux modality (present -> 0) per chip."""
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    """LoRA settings."""
    fusion: dict = field(default_factory=dict)
    """Extra keyword arguments for :class:`~lssr_ray.model.aux.AuxFusion`."""
    sar_head: dict = field(default_factory=dict)
    """Extra keyword arguments for :class:`~lssr_ray.model.sar.SARHead`."""
    skip: str = "pixel"
    """``pixel``: ``up + Dec(z' - g eps) - Dec(z)`` (starts at bicubic); ``latent``: ``Dec(z' - eps)``
    (checkpoints saved before the skip existed: ``from_pretrained`` picks it when the key is absent)."""
    color_fix: str = "none"
    """Colour fix at inference only (eval mode): ``none``, ``adain`` or ``wavelet``."""

    def __post_init__(self) -> None:
        from lssr_ray.model.colorfix import COLOR_FIXES

        if self.skip not in SKIPS:
            raise ConfigError(f"skip must be one of {SKIPS}, got {self.skip!r}")
        if self.color_fix not in COLOR_FIXES:
            raise ConfigError(f"color_fix must be one of {COLOR_FIXES}, got {self.color_fix!r}")
        if not 0 <= self.timestep < 1000:
            raise ConfigError(f"timestep must be in [0, 1000), got {self.timestep}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LSSRConfig:
        d = dict(d)
        if "adapters" in d and isinstance(d["adapters"], dict):
            d["adapters"] = AdapterConfig.from_dict(d["adapters"])
        return cls(**d)


# ----------------------------------------------------------------------------- torch side
def _torch_module_base():
    import torch

    return torch.nn.Module


class LSSRModel(_torch_module_base()):
    """Trainable LSSR: frozen base + LoRA adapters + :class:`AuxFusion` + :class:`SARHead`.

    ``forward(lr, dem, landcover, month, present, sar)`` takes the tensors of
    :func:`~lssr_ray.data.batch.preprocess` (same names and shapes) and returns (B, 6, H, W)
    images (OUTPUT_BANDS order) clamped to :func:`valid_image_range`. Only adapters, fusion and
    SAR head have ``requires_grad``. The model takes over ``base``'s UNet (LoRA layers are
    injected into it): build each model on its own base (:meth:`from_pretrained` copies one).
    """

    def __init__(self, base: Any, config: LSSRConfig | None = None, *, adapters: str | Path | None = None) -> None:

        from lssr_ray.model.adapters import add_adapters, load_adapters
        from lssr_ray.model.aux import AuxFusion
        from lssr_ray.model.sar import SARHead

        super().__init__()
        self.config = config or LSSRConfig()
        self.base_uri, self.base_fingerprint = base.uri, base.fingerprint
        self.vae = base.vae
        self.unet = base.unet
        self.vae.requires_grad_(False)
        self.unet.requires_grad_(False)
        if adapters is None:
            add_adapters(self.unet, self.config.adapters)
        else:
            load_adapters(self.unet, adapters)
        for n, p in self.unet.named_parameters():
            p.requires_grad_("lora_" in n)
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        lat = self.vae.config.latent_channels
        self.fusion = AuxFusion(**{"latent_channels": lat, "downsample": down, **self.config.fusion})
        self.sar_head = SARHead(**self.config.sar_head)
        self.register_buffer("prompt_embeds", base.prompt_embeds.clone(), persistent=False)
        import torch

        # g of the pixel skip, one per band group (rgb, ir); 0 = output is the bicubic image
        self.detail_gate = torch.nn.Parameter(torch.zeros(2), requires_grad=self.config.skip == "pixel")
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.merged = False

    # -- modes
    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: never in train mode
        return self

    def trainable_parameters(self) -> list:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_summary(self) -> dict[str, dict[str, int]]:
        """{component: {"trainable": n, "frozen": n}} for unet (base + LoRA), vae, fusion, sar_head."""
        out = {}
        for name, mod in (("unet", self.unet), ("vae", self.vae), ("fusion", self.fusion), ("sar_head", self.sar_head)):
            t = sum(p.numel() for p in mod.parameters() if p.requires_grad)
            f = sum(p.numel() for p in mod.parameters() if not p.requires_grad)
            out[name] = {"trainable": t, "frozen": f}
        g = self.detail_gate
        out["gate"] = {"trainable": g.numel() if g.requires_grad else 0, "frozen": 0 if g.requires_grad else g.numel()}
        out["total"] = {k: sum(v[k] for v in out.values()) for k in ("trainable", "frozen")}
        return out

    # -- forward
    def forward(self, lr, dem, landcover, month, present, sar):
        import torch
        import torch.nn.functional as F

        b = lr.shape[0]
        s = self.config.scale
        H, W = lr.shape[-2] * s, lr.shape[-1] * s
        if self.training and self.config.modality_dropout > 0:
            keep = (torch.rand(present.shape, device=present.device) >= self.config.modality_dropout)
            present = present * keep.to(present.dtype)
        up = F.interpolate(lr, size=(H, W), mode="bicubic", align_corners=False).clamp(-1, 1)
        x = torch.cat([up[:, :3], up[:, 3:]], 0)  # [rgb chips; ir chips]
        z = self.vae.encode(x).latent_dist.mean * self.scaling_factor
        zf = self.fusion(z, dem, landcover, month, present)
        emb = self.prompt_embeds.expand(zf.shape[0], -1, -1)
        eps = self.unet(zf, self.config.timestep, encoder_hidden_states=emb).sample
        sf = self.scaling_factor
        if self.config.skip == "pixel":
            g = self.detail_gate.repeat_interleave(b).view(-1, 1, 1, 1).to(z.dtype)
            # one decoder call for both terms; the VAE error is in both and cancels
            dec = self.vae.decode(torch.cat([zf - g * eps, z], 0) / sf).sample
            img = x + (dec[: 2 * b] - dec[2 * b :])
        else:
            img = self.vae.decode((zf - eps) / sf).sample
        img = self.sar_head(self._to_valid_range(img, b), sar, present[:, 2])
        if not self.training and self.config.color_fix != "none":
            from lssr_ray.model.colorfix import apply_color_fix

            img = apply_color_fix(self.config.color_fix, img, x)
        img = self._to_valid_range(img, b)
        return torch.cat([img[:b], img[b:]], 1)

    @staticmethod
    def _to_valid_range(img, b: int):
        """Clamp group-major images (2b, 3, H, W) = [rgb chips; ir chips] per band to
        :func:`valid_image_range` (Min/Max with constant bounds: exports to ONNX as is)."""
        import torch

        lo, hi = (torch.as_tensor(v, dtype=img.dtype, device=img.device).reshape(2, 1, 3, 1, 1)
                  for v in valid_image_range())
        x = img.reshape(2, b, *img.shape[1:])
        return torch.maximum(torch.minimum(x, hi), lo).reshape(img.shape)

    def forward_batch(self, inputs: dict[str, Any]):
        """``forward`` on the dict of :func:`~lssr_ray.data.batch.preprocess` (numpy or torch values),
        on the model's device."""
        import torch

        dev = self.prompt_embeds.device
        t = {k: torch.as_tensor(inputs[k]).to(dev) for k in ("lr", "dem", "landcover", "month", "present", "sar")}
        return self(t["lr"], t["dem"], t["landcover"], t["month"], t["present"], t["sar"])

    # -- checkpoints
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write adapters (LoRA weights only), fusion, SAR head, prompt embedding and config."""
        from safetensors.torch import save_file

        from lssr_ray.model.adapters import save_adapters

        if self.merged:
            raise ConfigError("cannot save a checkpoint from a merged (inference) model")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_adapters(self.unet, self.config.adapters, folder / "adapters")
        self.fusion.save_pretrained(folder / "fusion")
        self.sar_head.save_pretrained(folder / "sar_head")
        save_file({"prompt_embeds": self.prompt_embeds.contiguous()}, str(folder / "prompt_embeds.safetensors"))
        if self.config.skip == "pixel":
            save_file({"detail_gate": self.detail_gate.detach().contiguous()}, str(folder / GATE_FILE))
        meta = {
            "config": self.config.to_dict(),
            "base": {"uri": self.base_uri, "fingerprint": self.base_fingerprint},
        }
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, base: Any | str | os.PathLike | None = None, check_base: bool = True
    ) -> LSSRModel:
        """Rebuild a model from :meth:`save_pretrained` output.

        ``base``: a loaded :class:`~lssr_ray.model.base.BaseModel` (left untouched: the model gets
        a copy of its UNet and its own prompt embedding), a path/URI (loaded fresh), or None for
        the URI recorded in the checkpoint. With ``check_base`` the base fingerprint must match.
        """
        import copy
        import dataclasses

        import torch
        from safetensors.torch import load_file

        from lssr_ray.model.aux import AuxFusion
        from lssr_ray.model.base import load_base
        from lssr_ray.model.sar import SARHead

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise MissingDataError(f"{folder} is not an LSSR checkpoint (no {CONFIG_NAME})")
        meta = json.loads((folder / CONFIG_NAME).read_text())
        if base is None or isinstance(base, (str, os.PathLike)):
            base = load_base(base if base is not None else meta["base"]["uri"])
        else:  # the caller's base: adapters are injected into the UNet, so work on a copy
            base = dataclasses.replace(base, unet=copy.deepcopy(base.unet))
        if check_base and base.fingerprint != meta["base"]["fingerprint"]:
            raise ConfigError(
                f"checkpoint {folder} was trained on base {meta['base']['uri']} "
                f"(fingerprint {meta['base']['fingerprint'][:12]}), got {base.uri} "
                f"({base.fingerprint[:12]}); pass the matching base or check_base=False"
            )
        emb_file = folder / "prompt_embeds.safetensors"
        if emb_file.is_file():
            base = dataclasses.replace(base, prompt_embeds=load_file(str(emb_file))["prompt_embeds"])
        cfg = dict(meta["config"])
        cfg.setdefault("skip", "latent")  # saved before the pixel skip existed: keep its forward
        model = cls(base, LSSRConfig.from_dict(cfg), adapters=folder / "adapters")
        model.fusion = AuxFusion.from_pretrained(folder / "fusion")
        model.sar_head = SARHead.from_pretrained(folder / "sar_head")
        for m in (model.fusion, model.sar_head):
            m.requires_grad_(True)
        if model.config.skip == "pixel":
            if not (folder / GATE_FILE).is_file():
                raise MissingDataError(f"{folder} lacks {GATE_FILE} (the pixel skip's gate)")
            with torch.no_grad():
                model.detail_gate.copy_(load_file(str(folder / GATE_FILE))["detail_gate"])
        return model

    @classmethod
    def from_ref(cls, ref: CheckpointRef) -> LSSRModel:
        """The model of a resolved checkpoint (:func:`~lssr_ray.model.checkpoint.resolve_checkpoint`)
        on its base, after ``torch.manual_seed(ref.seed)``: without a checkpoint (untrained
        adapters) every actor and every resumed run builds bit-identical weights."""
        import torch

        from lssr_ray.model.base import load_base

        torch.manual_seed(int(ref.seed))
        if ref.path:
            return cls.from_pretrained(ref.path, base=ref.base)
        return cls(load_base(ref.base))

    def merge_for_inference(self) -> LSSRModel:
        """Fold the LoRA adapters into the UNet weights, freeze everything, eval mode."""
        from lssr_ray.model.adapters import merge_adapters

        if not self.merged:
            merge_adapters(self.unet, self.config.adapters)
            self.merged = True
        self.requires_grad_(False)
        return self.eval()


def parameter_table(summary: dict[str, dict[str, int]]) -> str:
    """Format :meth:`LSSRModel.parameter_summary` as a text table."""
    lines = [f"{'component':<10} {'trainable':>12} {'frozen':>12}"]
    for k, v in summary.items():
        lines.append(f"{k:<10} {v['trainable']:>12,} {v['frozen']:>12,}")
    return "\n".join(lines)


__all__ = [
    "LSSRConfig",
    "LSSRModel",
    "parameter_table",
]
