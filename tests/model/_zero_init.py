"""Give an untrained LSSRModel's zero-initialised parts random values (tests only).

At init the model is exactly bicubic (LoRA B, the detail gate and the fusion / SAR output
projections are zero), so tests that need the adapters or aux inputs to change the output (ONNX
parity through the merged LoRA, missing-modality paths) perturb those first.
"""

from __future__ import annotations

import torch


def randomize_zero_inits(model, seed: int = 0, std: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or n == "detail_gate" or n.startswith(("fusion.out.", "sar_head.out_proj.")):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model
