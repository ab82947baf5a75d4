"""Which LSSR weights a run uses: the one resolver of adapter checkpoints and their base.

An adapter checkpoint is a folder with :data:`CONFIG_NAME` (written by
:meth:`lssr_ray.model.lssr.LSSRModel.save_pretrained`). :func:`resolve_checkpoint` turns what a
user asked for (a folder, or nothing for :data:`~lssr_ray.config.DEFAULT_CHECKPOINT_DIR`) into a
:class:`CheckpointRef`; :meth:`lssr_ray.model.lssr.LSSRModel.from_ref` loads it. Nothing here
imports torch: the mapping driver resolves and fingerprints without loading a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lssr_ray.config import DEFAULT_BASE_DIR, DEFAULT_CHECKPOINT_DIR, REPO_ROOT, portable_ref
from lssr_ray.errors import MissingDataError
from lssr_ray.model.fingerprint import folder_sha256

CONFIG_NAME = "lssr_config.json"
"""The file that makes a folder an adapter checkpoint (settings + base URI and fingerprint)."""
TRAIN_HINT = "`python jobs/train.py --config configs/train_cpu_v3.yaml`"
"""How to make the default checkpoint, for error messages."""
UNTRAINED_WARNING = (
    "no adapter checkpoint at {path}: using UNTRAINED adapters (fresh LoRA, randomly initialised "
    "aux fusion and SAR head, seed {seed}) on the base; outputs are not super-resolution results. "
    f"Make the checkpoint with {TRAIN_HINT} or pass --checkpoint"
)


@dataclass(frozen=True)
class CheckpointRef:
    """A resolved choice of weights: adapter checkpoint folder (or none) on a base."""

    path: str | None
    """Adapter checkpoint folder; None = untrained adapters seeded with :attr:`seed`."""
    base: str
    """Frozen base folder or ``s3://`` URI."""
    seed: int = 0
    """``torch.manual_seed`` before building the model (untrained adapters are bit-identical on
    every actor and every resumed run)."""
    warning: str | None = None
    """Set when the default checkpoint was missing and untrained adapters stand in."""

    def adapter_sha256(self) -> str:
        """Identity of the adapters: the folder hash, or ``untrained-seed<seed>``."""
        return folder_sha256(self.path) if self.path else f"untrained-seed{self.seed}"

    def base_sha256(self) -> str:
        """Identity of the base (:func:`~lssr_ray.model.base.base_fingerprint`; an ``s3://``
        base is copied into the local cache first)."""
        from lssr_ray.model.base import base_fingerprint, resolve_base

        return base_fingerprint(resolve_base(self.base))


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an adapter checkpoint (:data:`CONFIG_NAME`)."""
    return (Path(folder) / CONFIG_NAME).is_file()


def resolve_checkpoint(
    checkpoint: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
    seed: int = 0,
    allow_untrained: bool = True,
) -> CheckpointRef:
    """The weights for ``checkpoint`` (None: the bundled default) on ``base`` (None:
    :data:`~lssr_ray.config.DEFAULT_BASE_DIR`).

    An explicit checkpoint that does not exist is a :class:`MissingDataError`. A missing default
    falls back to untrained adapters with :attr:`CheckpointRef.warning` when ``allow_untrained``
    (mapping dry runs), else it is an error too (the crop-type ``lssr`` source).
    """
    base_ref = str(base if base is not None else DEFAULT_BASE_DIR)
    if checkpoint:
        if not is_checkpoint(checkpoint):
            raise MissingDataError(
                f"adapter checkpoint {checkpoint} not found (no {CONFIG_NAME}); make one with "
                f"{TRAIN_HINT} or leave the checkpoint out to use {portable_ref(DEFAULT_CHECKPOINT_DIR)}"
            )
        return CheckpointRef(str(checkpoint), base_ref, int(seed))
    if is_checkpoint(DEFAULT_CHECKPOINT_DIR):
        return CheckpointRef(str(DEFAULT_CHECKPOINT_DIR), base_ref, int(seed))
    if not allow_untrained:
        raise MissingDataError(
            f"adapter checkpoint {portable_ref(DEFAULT_CHECKPOINT_DIR)} not found (no {CONFIG_NAME}); "
            f"make it with {TRAIN_HINT} or pass another checkpoint"
        )
    warning = UNTRAINED_WARNING.format(path=portable_ref(DEFAULT_CHECKPOINT_DIR), seed=seed)
    return CheckpointRef(None, base_ref, int(seed), warning)


def recorded_base(checkpoint: str | os.PathLike) -> str:
    """The base URI recorded in a checkpoint; a relative path is taken from the repository root."""
    f = Path(checkpoint) / CONFIG_NAME
    if not f.is_file():
        raise MissingDataError(f"{checkpoint} is not an LSSR checkpoint (no {CONFIG_NAME})")
    uri = json.loads(f.read_text())["base"]["uri"]
    if "://" in uri or Path(uri).is_absolute():
        return uri
    return str(REPO_ROOT / uri)


__all__ = [
    "CONFIG_NAME",
    "UNTRAINED_WARNING",
    "CheckpointRef",
    "is_checkpoint",
    "recorded_base",
    "resolve_checkpoint",
]
