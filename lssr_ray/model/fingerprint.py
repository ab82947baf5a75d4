"""The one folder hash: sha256 over a model folder's settings and weights.

Run identities (``adapter_sha256``, ``base_model_sha256`` in store attributes) and the base
fingerprint recorded in every adapter checkpoint are this hash, so its bytes must never change:
(relative file name, file bytes) of every ``*.json`` and ``*.safetensors`` file, in a fixed order.
READMEs, training logs and other files are not part of it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

HASHED_SUFFIXES = (".json", ".safetensors")
"""What a model folder's identity is made of: settings and weights."""


def folder_sha256(folder: str | os.PathLike, *, subfolders: Sequence[str] | None = None) -> str:
    """Hex sha256 over the ``*.json`` / ``*.safetensors`` files of ``folder``.

    ``subfolders`` None: every such file under ``folder`` at any depth, sorted by path (adapter
    checkpoints). Otherwise only the files directly inside each listed subfolder (``""`` = the
    root), subfolder by subfolder in the given order, sorted by name within each (the SD base:
    :data:`lssr_ray.model.base.FINGERPRINT_SUBFOLDERS`).
    """
    root = Path(folder)
    if subfolders is None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in HASHED_SUFFIXES)
    else:
        files = [f for sub in subfolders for f in sorted((root / sub).glob("*"))
                 if f.is_file() and f.suffix in HASHED_SUFFIXES]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


__all__ = ["HASHED_SUFFIXES", "folder_sha256"]
