"""The one checkpoint resolver, the one folder hash, and from_pretrained leaving the base alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from lssr_ray.config import DEFAULT_BASE_DIR, DEFAULT_CHECKPOINT_DIR, REPO_ROOT, SMALL_BASE_DIR
from lssr_ray.errors import MissingDataError
from lssr_ray.model import checkpoint as ckpt_mod
from lssr_ray.model.base import base_fingerprint, load_base
from lssr_ray.model.checkpoint import CheckpointRef, recorded_base, resolve_checkpoint
from lssr_ray.model.fingerprint import folder_sha256
from lssr_ray.model.lssr import LSSRModel

MODELS = sorted(p for p in (REPO_ROOT / "models").iterdir() if p.is_dir())


def _hash(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _old_adapter_hash(root: Path) -> str:
    """mapping/udfs.folder_sha256 as it was before the two hashes became one."""
    return _hash(root, sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")))


def _old_base_hash(root: Path) -> str:
    """model/base.base_fingerprint as it was before the two hashes became one."""
    return _hash(root, [f for sub in ("", "unet", "vae", "scheduler") for f in sorted((root / sub).glob("*"))
                        if f.is_file() and f.suffix in (".json", ".safetensors")])


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_one_folder_hash_keeps_both_old_hex_digests(folder):
    """Run ids (adapter_sha256, base_model_sha256) and the fingerprints recorded in checkpoints
    depend on these bytes: every committed model folder hashes as before."""
    assert folder_sha256(folder) == _old_adapter_hash(folder)
    assert base_fingerprint(folder) == _old_base_hash(folder)


def test_recorded_fingerprint_of_the_default_checkpoint_matches_its_base():
    meta = json.loads((DEFAULT_CHECKPOINT_DIR / ckpt_mod.CONFIG_NAME).read_text())
    assert meta["base"]["fingerprint"] == base_fingerprint(DEFAULT_BASE_DIR)
    assert recorded_base(DEFAULT_CHECKPOINT_DIR) == str(DEFAULT_BASE_DIR)


def test_explicit_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDataError, match=r"no lssr_config\.json.*jobs/train\.py"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(MissingDataError, match="not an LSSR checkpoint"):
        recorded_base(tmp_path)


def test_default_checkpoint_and_untrained_fallback(tmp_path, monkeypatch):
    ref = resolve_checkpoint(None, seed=5)
    assert ref == CheckpointRef(str(DEFAULT_CHECKPOINT_DIR), str(DEFAULT_BASE_DIR), 5, None)
    assert ref.adapter_sha256() == folder_sha256(DEFAULT_CHECKPOINT_DIR)
    assert ref.base_sha256() == base_fingerprint(DEFAULT_BASE_DIR)

    monkeypatch.setattr(ckpt_mod, "DEFAULT_CHECKPOINT_DIR", tmp_path / "lssr-adapters-cpu")
    ref = resolve_checkpoint(None, base=SMALL_BASE_DIR, seed=3)
    assert ref.path is None and ref.base == str(SMALL_BASE_DIR) and ref.adapter_sha256() == "untrained-seed3"
    assert "UNTRAINED" in ref.warning and "seed 3" in ref.warning and "jobs/train.py" in ref.warning
    with pytest.raises(MissingDataError, match="pass another checkpoint"):
        resolve_checkpoint(None, allow_untrained=False)
    (tmp_path / "lssr-adapters-cpu").mkdir()
    (tmp_path / "lssr-adapters-cpu" / "lssr_config.json").write_text("{}")
    assert resolve_checkpoint(None).path == str(tmp_path / "lssr-adapters-cpu")


def test_from_pretrained_leaves_the_callers_base_untouched(base, tmp_path):
    """The caller's base keeps its UNet (no LoRA layers injected, same weights) and its prompt
    embedding; the loaded model is the saved one all the same."""
    saved = LSSRModel(load_base(SMALL_BASE_DIR))
    with torch.no_grad():
        saved.prompt_embeds.add_(0.5)  # a checkpoint embedding that differs from the base's
    ck = saved.save_pretrained(tmp_path / "ck")
    unet_before = {n: p.detach().clone() for n, p in base.unet.named_parameters()}
    emb_before = base.prompt_embeds
    model = LSSRModel.from_pretrained(ck, base=base)
    assert base.prompt_embeds is emb_before
    assert {n: p for n, p in base.unet.named_parameters()}.keys() == unet_before.keys()
    assert not any("lora" in n for n, _ in base.unet.named_modules())
    assert all(torch.equal(p, unet_before[n]) for n, p in base.unet.named_parameters())
    assert model.unet is not base.unet and torch.equal(model.prompt_embeds, saved.prompt_embeds)
    # the untouched base still builds a second model from the same checkpoint
    again = LSSRModel.from_pretrained(ck, base=base)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
