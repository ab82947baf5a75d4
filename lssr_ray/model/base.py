"""Load the frozen Stable Diffusion base (UNet, VAE, scheduler) from a local folder or s3://.

The folder has the diffusers layout of SD-2.1-base: ``unet/``, ``vae/``, ``scheduler/``,
``model_index.json``, plus ``empty_prompt_embeds.safetensors`` (key ``prompt_embeds``, shape
(1, tokens, cross_attention_dim)): the text encoder's output for the empty prompt "", computed
once offline so no text encoder is needed at inference. For a real SD folder that still has
``text_encoder/`` and ``tokenizer/``, :func:`make_empty_prompt_embedding` writes that file.

Nothing is ever fetched from a model hub: loads use ``local_files_only=True``. An ``s3://`` base
is copied once into a local cache keyed by the URI (endpoint and credentials from
:mod:`lssr_ray.fileio`).

The project's small stand-in base (:data:`lssr_ray.config.SMALL_BASE_DIR`, made by
``scripts/make_small_base.py``) has the same classes and layout with a small config
(:data:`SMALL_VAE_CONFIG`, :data:`SMALL_UNET_CONFIG`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lssr_ray.config import REPO_ROOT, SMALL_BASE_DIR
from lssr_ray.errors import MissingDataError, StorageUnreachableError
from lssr_ray.fileio import filesystem
from lssr_ray.model.fingerprint import folder_sha256, object_listing

log = logging.getLogger(__name__)

FINGERPRINT_SUBFOLDERS = ("", "unet", "vae", "scheduler")
"""Where the files of :func:`base_fingerprint` are (not text_encoder/ or tokenizer/)."""
EMPTY_PROMPT_FILE = "empty_prompt_embeds.safetensors"

#: AutoencoderKL config of the stand-in: 4 blocks -> downsampling x8 like SD, 4 latent channels.
SMALL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 32, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 192,
}
#: UNet2DConditionModel config of the stand-in (latent 24x24 for a 192x192 chip).
SMALL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 24,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
#: SD-2.1-base UNet architecture (for FLOP counts and timing with random weights; public config values of stabilityai/stable-diffusion-2-1-base).
SD21_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
#: SD-2.1-base VAE architecture (public config values).
SD21_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
}
SD21_PROMPT_TOKENS = 77
"""Tokens of SD-2.1's empty-prompt embedding (1, 77, 1024)."""
#: DDPMScheduler config of SD-2.1-base (gives alphas_cumprod; the one-step model uses its timestep).
SD21_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
    "trained_betas": None,
}


@dataclass
class BaseModel:
    """The frozen base: diffusers modules (float32, eval, requires_grad False) and where it came from."""

    unet: Any
    """``UNet2DConditionModel``."""
    vae: Any
    """``AutoencoderKL``."""
    scheduler: Any
    """``DDPMScheduler`` (config only; the model does one fixed-timestep step)."""
    prompt_embeds: Any
    """torch float32 (1, tokens, cross_attention_dim): empty-prompt text embedding."""
    path: str
    """Local folder the base was loaded from."""
    uri: str
    """What the caller asked for (local path or s3:// URI)."""
    fingerprint: str
    """sha256 over the folder's config files and weight files (see :func:`base_fingerprint`)."""


def default_cache_dir() -> Path:
    """``$LSSR_CACHE`` or ``~/.cache/lssr-ray``: where s3:// bases are copied."""
    return Path(os.environ.get("LSSR_CACHE", Path.home() / ".cache" / "lssr-ray"))


def resolve_base(uri: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a local folder for ``uri``: a local path as is, an s3:// URI copied into the cache.

    The cache key is a hash of the URI; a finished copy is marked by a ``.complete`` file holding
    the source's :func:`~lssr_ray.model.fingerprint.object_listing` (names, sizes, ETags), so an
    interrupted download is redone and a changed source object is downloaded again (a listing per
    resolve, no object read); an unreachable source leaves a complete copy in use.
    """
    s = str(uri)
    if not s.startswith("s3://"):
        p = Path(s).expanduser()
        if not p.is_absolute() and not p.is_dir():
            # Checkpoints record repository-relative bases (models/small-sd-base).
            p = REPO_ROOT / p if (REPO_ROOT / p).is_dir() else p
        if not p.is_dir():
            raise MissingDataError(
                f"base model folder not found: {p}; give a local diffusers SD folder "
                f"(unet/, vae/, scheduler/) or an s3:// URI, e.g. {SMALL_BASE_DIR}"
            )
        return p
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / "bases" / hashlib.sha256(s.rstrip("/").encode()).hexdigest()[:16]
    marker = dest / ".complete"
    fs, src = filesystem(s.rstrip("/"))
    try:
        listing = object_listing(fs, src)
    except (OSError, ConnectionError) as exc:
        if marker.is_file():
            log.warning("cannot list %s (%s): using the cached copy %s", s, exc, dest)
            return dest
        raise StorageUnreachableError(f"cannot list base model at {s}: {exc}") from exc
    if marker.is_file() and _recorded_listing(marker) == listing:
        return dest
    try:
        if "model_index.json" not in listing and not any(k.startswith("unet/") for k in listing):
            raise MissingDataError(f"{s} holds no diffusers SD folder (no model_index.json or unet/)")
        marker.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)  # objects removed at the source go too
        dest.mkdir(parents=True, exist_ok=True)
        fs.get(src + "/", str(dest) + "/", recursive=True)
    except (OSError, ConnectionError) as exc:
        if isinstance(exc, MissingDataError):
            raise
        raise StorageUnreachableError(f"cannot copy base model from {s}: {exc}") from exc
    marker.write_text(json.dumps({"uri": s, "objects": listing}) + "\n")
    return dest


def _recorded_listing(marker: Path) -> dict[str, list] | None:
    try:
        return json.loads(marker.read_text()).get("objects")
    except (OSError, ValueError, AttributeError):  # a marker of an older version: copy again
        return None


def base_fingerprint(folder: str | os.PathLike) -> str:
    """The base's :func:`~lssr_ray.model.fingerprint.folder_sha256` over the root and
    :data:`FINGERPRINT_SUBFOLDERS`. Stored in adapter checkpoints to catch a wrong base."""
    return folder_sha256(folder, subfolders=FINGERPRINT_SUBFOLDERS)


def load_base(
    uri: str | os.PathLike = SMALL_BASE_DIR, *, cache_dir: str | os.PathLike | None = None
) -> BaseModel:
    """Load a frozen SD base (local folder or s3:// URI) in float32 on CPU, eval mode, no grads."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_base(uri, cache_dir=cache_dir)
    for sub in ("unet", "vae", "scheduler"):
        if not (folder / sub).is_dir():
            raise MissingDataError(
                f"base model folder {folder} lacks {sub}/; expected the diffusers SD-2.1-base "
                "layout with unet/, vae/, scheduler/"
            )
    emb_file = folder / EMPTY_PROMPT_FILE
    if not emb_file.is_file():
        raise MissingDataError(
            f"{emb_file} not found: compute the empty-prompt embedding once with "
            "lssr_ray.model.base.make_empty_prompt_embedding(folder) (needs text_encoder/ and "
            "tokenizer/ in the folder, offline)"
        )
    kw = {"local_files_only": True, "torch_dtype": torch.float32}
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    emb = load_file(str(emb_file))["prompt_embeds"].to(torch.float32)
    for m in (unet, vae):
        m.requires_grad_(False)
        m.eval()
    return BaseModel(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        prompt_embeds=emb,
        path=str(folder),
        uri=str(uri),
        fingerprint=base_fingerprint(folder),
    )


def make_empty_prompt_embedding(folder: str | os.PathLike) -> Path:
    """Write ``empty_prompt_embeds.safetensors`` for a real SD folder from its own text encoder.

    Runs offline (``local_files_only``) with ``transformers``' CLIPTextModel/CLIPTokenizer on the
    folder's ``text_encoder/`` and ``tokenizer/``; the prompt is "" padded to the tokenizer's max
    length (77 for SD-2.1-base, giving (1, 77, 1024)).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(folder)
    for sub in ("text_encoder", "tokenizer"):
        if not (root / sub).is_dir():
            raise MissingDataError(f"{root} lacks {sub}/, needed once to compute the empty prompt")
    tok = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True)
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    with torch.no_grad():
        emb = enc(ids.input_ids)[0].float().contiguous()
    out = root / EMPTY_PROMPT_FILE
    save_file({"prompt_embeds": emb}, str(out))
    return out


def write_model_index(folder: str | os.PathLike) -> None:
    """Write an SD-style ``model_index.json`` naming the three components (no text encoder)."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    Path(folder, "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


__all__ = [
    "EMPTY_PROMPT_FILE",
    "FINGERPRINT_SUBFOLDERS",
    "SD21_PROMPT_TOKENS",
    "SD21_SCHEDULER_CONFIG",
    "SD21_UNET_CONFIG",
    "SD21_VAE_CONFIG",
    "SMALL_UNET_CONFIG",
    "SMALL_VAE_CONFIG",
    "BaseModel",
    "base_fingerprint",
    "load_base",
    "make_empty_prompt_embedding",
    "resolve_base",
    "write_model_index",
]
