"""LoRA adapters on the frozen UNet (peft through diffusers' PeftAdapterMixin).

The reference design (PiSA-SR) has two adapters, ``pixel`` (fidelity: MSE) and ``semantic``
(detail: LPIPS + classifier-score distillation), trained one after the other. Here the default is
ONE adapter, ``pixel``, of rank 8: the semantic stage's losses need pretrained networks that are
not available offline (no LPIPS weights, no CLIP text stack for CSD), and two adapters trained
jointly on the same pixel loss are one adapter of the summed rank with a redundant
parametrisation (issue 11; docs/TRAINING.md "One adapter"). Several named adapters still work
(``names=("pixel", "semantic")``, :func:`set_trainable_adapters` for staged training, weighted
merge = the reference's lambda_pix / lambda_sem).

Targets, as in the reference: attention ``to_q/to_k/to_v/to_out.0``, transformer
``proj_in/proj_out``, resnet ``conv1/conv2/conv_shortcut``, the down/up-sampler convs
(``...samplers.0.conv``), feed-forward ``ff.net.0.proj/ff.net.2`` and the UNet's own
``conv_in/conv_out``. Checkpoints written before this record their own (narrower) targets in
``adapter_config.json`` and load unchanged.

Save/load follows the measured trap in ../shared/STACK.md: only adapter weights are written
(``save_lora_adapter``), never ``save_pretrained`` of an injected UNet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lssr_ray.errors import ConfigError, MissingDataError

ADAPTER_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: Regex (peft ``target_modules``) for the adapted layers.
TARGET_MODULES = (
    r"^(conv_in|conv_out)$"
    r"|.*\.(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|conv1|conv2|conv_shortcut|conv|ff\.net\.0\.proj|ff\.net\.2)$"
)


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA settings; saved as ``adapters/adapter_config.json`` in a checkpoint."""

    names: tuple[str, ...] = ("pixel",)
    """Adapter names; each is one LoRA over the same target layers."""
    rank: int = 8
    """LoRA rank r (alpha = r, so the scaling is 1)."""
    merge_weights: tuple[float, ...] = (1.0,)
    """Weight of each adapter when merged for inference (same order as ``names``)."""
    target_modules: str = TARGET_MODULES
    """peft regex of adapted module names."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.names or len(set(self.names)) != len(self.names):
            raise ConfigError(f"adapter names must be distinct and non-empty, got {self.names}")
        if len(self.merge_weights) != len(self.names):
            raise ConfigError(
                f"merge_weights {self.merge_weights} must have one weight per adapter {self.names}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def add_adapters(unet: Any, cfg: AdapterConfig) -> None:
    """Inject the LoRA adapters into ``unet`` (in place) and activate all of them.

    LoRA A is Gaussian, B zero (peft "gaussian" init), so the injected UNet starts equal to the base.
    """
    from peft import LoraConfig

    for name in cfg.names:
        lc = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.rank,
            init_lora_weights="gaussian",
            target_modules=cfg.target_modules,
        )
        unet.add_adapter(lc, adapter_name=name)
    unet.set_adapters(list(cfg.names), [1.0] * len(cfg.names))


def set_trainable_adapters(unet: Any, names: tuple[str, ...] | list[str]) -> None:
    """Make only the LoRA weights of ``names`` trainable (others, and the base, frozen)."""
    for pname, p in unet.named_parameters():
        p.requires_grad_(
            "lora_" in pname and any(f".{n}." in pname or pname.endswith(f".{n}") for n in names)
        )


def save_adapters(unet: Any, cfg: AdapterConfig, folder: str | Path) -> None:
    """Write each adapter to ``folder/<name>/pytorch_lora_weights.safetensors`` + the config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in cfg.names:
        unet.save_lora_adapter(folder / name, adapter_name=name, weight_name=ADAPTER_WEIGHT_NAME)
    (folder / "adapter_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    f = Path(folder) / "adapter_config.json"
    if not f.is_file():
        raise MissingDataError(f"no adapter_config.json in {folder}: not an LSSR adapter folder")
    return AdapterConfig.from_dict(json.loads(f.read_text()))


def load_adapters(unet: Any, folder: str | Path) -> AdapterConfig:
    """Inject and fill the adapters saved by :func:`save_adapters` into a clean base ``unet``."""
    folder = Path(folder)
    cfg = read_adapter_config(folder)
    for name in cfg.names:
        if not (folder / name / ADAPTER_WEIGHT_NAME).is_file():
            raise MissingDataError(f"adapter {name!r} missing: {folder / name / ADAPTER_WEIGHT_NAME}")
        unet.load_lora_adapter(
            str(folder / name), weight_name=ADAPTER_WEIGHT_NAME, adapter_name=name, prefix=None
        )
    unet.set_adapters(list(cfg.names), [1.0] * len(cfg.names))
    return cfg


def merge_adapters(unet: Any, cfg: AdapterConfig) -> None:
    """Fold the adapters into the base weights (weighted by ``cfg.merge_weights``) and remove the
    LoRA layers, leaving a plain UNet (what the ONNX export and fast inference run)."""
    unet.set_adapters(list(cfg.names), list(cfg.merge_weights))
    unet.fuse_lora(lora_scale=1.0, adapter_names=list(cfg.names))
    unet.unload_lora()


def lora_parameter_count(unet: Any) -> int:
    """Number of LoRA parameters in ``unet``."""
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


__all__ = [
    "ADAPTER_WEIGHT_NAME",
    "TARGET_MODULES",
    "AdapterConfig",
    "add_adapters",
    "load_adapters",
    "lora_parameter_count",
    "merge_adapters",
    "read_adapter_config",
    "save_adapters",
    "set_trainable_adapters",
]
