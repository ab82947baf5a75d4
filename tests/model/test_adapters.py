"""LoRA injection, staged training switches and weighted merging on the small base UNet."""

from __future__ import annotations

import pytest
import torch

from lssr_ray.errors import ConfigError
from lssr_ray.model.adapters import (
    AdapterConfig,
    add_adapters,
    lora_parameter_count,
    merge_adapters,
    set_trainable_adapters,
)


def test_targets_the_reference_layers(base):
    """Attention, transformer projections, resnet convs + shortcuts, resampler convs, feed-forward
    and the UNet's conv_in / conv_out (the reference's list); norms and time embedding untouched."""
    add_adapters(base.unet, AdapterConfig())
    names = {n.split(".lora_")[0] for n, _ in base.unet.named_parameters() if "lora_A.pixel" in n}
    kinds = {n.rsplit(".", 1)[-1] if not n.endswith("to_out.0") else "to_out.0" for n in names}
    for k in ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "proj", "2", "proj_in", "proj_out",
              "conv_in", "conv_out", "conv_shortcut"):
        assert k in kinds, k
    assert any("downsamplers.0.conv" in n for n in names) and any("upsamplers.0.conv" in n for n in names)
    assert not any("norm" in n or "time_emb" in n for n in names)
    ranks = {p.shape[0] for n, p in base.unet.named_parameters() if "lora_A" in n}
    assert ranks == {AdapterConfig().rank}
    assert lora_parameter_count(base.unet) > 0


def test_staged_training_switch(base):
    add_adapters(base.unet, AdapterConfig(names=("pixel", "semantic"), merge_weights=(1.0, 1.0)))
    set_trainable_adapters(base.unet, ["pixel"])
    train = {n for n, p in base.unet.named_parameters() if p.requires_grad}
    assert train and all(".pixel." in n for n in train)


def test_weighted_merge_equals_weighted_adapters(base):
    cfg = AdapterConfig(names=("pixel", "semantic"), merge_weights=(1.0, 0.5))
    unet = base.unet
    add_adapters(unet, cfg)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.randn(1, 4, 6, 6)
    unet.set_adapters(list(cfg.names), [1.0, 0.5])
    with torch.no_grad():
        ref = unet(x, 1, encoder_hidden_states=base.prompt_embeds).sample
        unet.set_adapters(list(cfg.names), [1.0, 0.0])
        other = unet(x, 1, encoder_hidden_states=base.prompt_embeds).sample
    merge_adapters(unet, cfg)
    assert lora_parameter_count(unet) == 0
    with torch.no_grad():
        got = unet(x, 1, encoder_hidden_states=base.prompt_embeds).sample
    assert (got - ref).abs().max() < 1e-5 < (other - ref).abs().max()


def test_bad_adapter_config():
    with pytest.raises(ConfigError, match="one weight per adapter"):
        AdapterConfig(merge_weights=(1.0, 1.0))
    with pytest.raises(ConfigError, match="rank"):
        AdapterConfig(rank=0)
