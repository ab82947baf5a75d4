"""Inference-only LSSR on the batch contract: ``LSSRPipeline.from_pretrained(folder)(batch)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lssr_ray.data.batch import postprocess, preprocess
from lssr_ray.model.lssr import LSSRModel


class LSSRPipeline:
    """Inference-only LSSR: ``pipe(batch) -> {"sr": (B, 6, 3h, 3w) float32 reflectance, ...}``.

    Build with :meth:`from_pretrained` (checkpoint folder) or :meth:`from_model` (a trained
    :class:`LSSRModel`, merged in place). Deterministic: no sampling anywhere.
    """

    def __init__(self, model: LSSRModel, *, device: str = "cpu") -> None:
        self.model = model.merge_for_inference().to(device)
        self.scale = model.config.scale
        self.device = device

    @classmethod
    def from_pretrained(
        cls, checkpoint: str | Path, *, base: Any = None, check_base: bool = True, device: str = "cpu"
    ) -> LSSRPipeline:
        """Load a checkpoint folder (``base`` None: the base URI recorded in it) onto ``device``."""
        return cls(LSSRModel.from_pretrained(checkpoint, base=base, check_base=check_base), device=device)

    @classmethod
    def from_model(cls, model: LSSRModel, *, device: str = "cpu") -> LSSRPipeline:
        """Wrap a trained model (its adapters are merged in place)."""
        return cls(model, device=device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Batch dict of docs/ARCHITECTURE.md -> same dict plus ``sr``."""
        import torch

        inputs = preprocess(batch, scale=self.scale)
        with torch.inference_mode():
            img = self.model.forward_batch(inputs).float().cpu().numpy()
        out = dict(batch)
        out["sr"] = postprocess(img, inputs["valid"], scale=self.scale)
        return out


__all__ = ["LSSRPipeline"]
