"""The evaluation protocol (docs/TRAINING.md "Protocol"): what may be scored, and how.

- **Locations, not dates.** A checkpoint records the locations it trained on
  (``train_pairs.json``: ``train_locations``, or derived from its ``train`` pair ids); a base
  records the locations it was pretrained on (``pretrain_locations`` in its ``model_index.json``
  or ``pretrain_locations.json``). :func:`seen_locations` collects them; the evaluation refuses
  a location any of them saw unless told to label it "seen (not an evaluation)".
- **Centre of a chip with its halo.** Chips are cut with ``halo`` cells of real neighbouring
  pixels on every side; only the core is scored (:func:`core`), so no method is judged on
  borders it computed from padding.
- **Radiometric QA of real cross-sensor pairs**, fixed in advance (:data:`QA_GAIN`,
  :data:`QA_MIN_R`): per band, gain = mean(30 m input) / mean(truth degraded to 30 m) and the
  Pearson r between the two over clear 30 m cells (:func:`radiometric_qa`).
- **Radiometry-normalised PSNR**: per chip and band, an affine fit truth_30m ~ a * input + b at
  30 m (:func:`affine_fit`), applied to every method's output alike before scoring
  (:func:`apply_affine`), reported beside the raw PSNR.
- **Paired bootstrap** 95 % intervals over chips (:func:`paired_bootstrap`, seeded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import SCALE
from lssr_ray.errors import ConfigError

# What the protocol scores, and which way is better.
METRICS = ("psnr_rgb", "psnr_ir", "ssim_rgb", "ssim_ir", "ndvi_mse", "sam_deg")
HIGHER_IS_BETTER = {"psnr_rgb": True, "psnr_ir": True, "ssim_rgb": True, "ssim_ir": True,
                    "ndvi_mse": False, "sam_deg": False, "psnr_rgb_norm": True, "psnr_ir_norm": True}
NORM_METRICS = ("psnr_rgb_norm", "psnr_ir_norm")
"""PSNR after the per-chip per-band affine radiometric fit at 30 m (:func:`affine_fit`)."""
ALL_METRICS = METRICS + NORM_METRICS
BOOTSTRAP_METRICS = ("psnr_rgb", "psnr_ir", "ssim_rgb", "ssim_ir", "ndvi_mse", "psnr_rgb_norm", "psnr_ir_norm")

QA_GAIN = (0.85, 1.15)
"""Accepted per-band 30 m gain, mean(input) / mean(truth at 30 m), of a real pair (every band)."""
QA_MIN_R = 0.9
"""Minimum per-band Pearson r between the 30 m input and the truth at 30 m (every band)."""
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PRETRAIN_FILE = "pretrain_locations.json"


def checkpoint_locations(folder: str | Path) -> set[str] | None:
    """Locations a trained folder (LSSR checkpoint or baseline CNN) trained or validated on, from
    its ``train_pairs.json``; None when the folder has no such record."""
    from lssr_ray.data.pairs import location_from_pair_id
    from lssr_ray.train.loop import SPLIT_FILE

    f = Path(folder) / SPLIT_FILE
    if not f.is_file():
        return None
    split = json.loads(f.read_text())
    if "train_locations" in split:
        from lssr_ray.data.pairs import location_from_folder

        return {location_from_folder(x) for x in [*split["train_locations"], *split.get("val_locations", [])]}
    # written before locations were recorded: derive them from the pair ids trained and validated on
    return {location_from_pair_id(p) for p in [*split.get("train", []), *split.get("val", [])]}


def base_locations(base: str | Path) -> set[str] | None:
    """Locations a base was pretrained on (``pretrain_locations`` in ``model_index.json`` or a
    ``pretrain_locations.json`` list); None when the base records none (or is not a local folder)."""
    from lssr_ray.data.pairs import location_from_folder

    d = Path(str(base))
    v = None
    if (d / PRETRAIN_FILE).is_file():
        v = json.loads((d / PRETRAIN_FILE).read_text())
        v = v["pretrain_locations"] if isinstance(v, dict) else v
    elif (d / "model_index.json").is_file():
        v = json.loads((d / "model_index.json").read_text()).get("pretrain_locations")
    # folder names and site ids both accepted: landsat8_l1t_alabama_2015 -> alabama_2015
    return None if v is None else {location_from_folder(x) for x in v}


def seen_locations(checkpoint: str | Path, base: str | Path, cnn: str | Path | None = None) -> dict[str, set[str] | None]:
    """``{"checkpoint": ..., "base": ..., "cnn": ...}``: the locations each trained or pretrained
    on (None: not recorded)."""
    out = {"checkpoint": checkpoint_locations(checkpoint), "base": base_locations(base)}
    if cnn is not None:
        out["cnn"] = checkpoint_locations(cnn)
    return out


def core(arr: np.ndarray, halo: int) -> np.ndarray:
    """``arr[..., halo:-halo, halo:-halo]`` (the scored centre of a chip cut with a halo)."""
    if halo < 0:
        raise ConfigError(f"halo must be >= 0, got {halo}")
    return arr if halo == 0 else arr[..., halo:-halo, halo:-halo]


def truth_at_30m(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """10 m truth (C, H, W) degraded to the 30 m grid by the sensor model of the synthetic pairs
    (:func:`lssr_ray.data.psf.degrade`): what a 30 m sensor would have seen of it."""
    from lssr_ray.data.psf import degrade

    return degrade(hr, scale)[0]


def _clear_pairs(lr: np.ndarray, hr30: np.ndarray) -> np.ndarray:
    return np.isfinite(lr).all(0) & np.isfinite(hr30).all(0)


def radiometric_qa(lr: np.ndarray, hr: np.ndarray, *, scale: int = SCALE) -> dict[str, Any]:
    """QA of one pair: per-band ``gain`` (mean input / mean truth at 30 m), Pearson ``r`` and
    ``passed`` (every band within :data:`QA_GAIN` and r > :data:`QA_MIN_R`; False when fewer than
    3 clear cells). ``lr`` (C, h, w) and ``hr`` (C, 3h, 3w) reflectance, NaN = no data."""
    hr30 = truth_at_30m(hr, scale)
    ok = _clear_pairs(lr, hr30)
    c = lr.shape[0]
    if ok.sum() < 3:
        return {"gain": [float("nan")] * c, "r": [float("nan")] * c, "passed": False, "n_cells": int(ok.sum())}
    x, y = lr[:, ok].astype(np.float64), hr30[:, ok].astype(np.float64)
    gain = x.mean(1) / y.mean(1)
    r = np.array([np.corrcoef(x[b], y[b])[0, 1] if x[b].std() > 0 and y[b].std() > 0 else np.nan for b in range(c)])
    passed = bool(np.all((gain >= QA_GAIN[0]) & (gain <= QA_GAIN[1])) and np.all(r > QA_MIN_R))
    return {"gain": gain.tolist(), "r": r.tolist(), "passed": passed, "n_cells": int(ok.sum())}


def affine_fit(lr: np.ndarray, hr: np.ndarray, *, scale: int = SCALE) -> np.ndarray:
    """Per-band least-squares fit truth_30m = a * input + b over clear 30 m cells: (C, 2) of
    (a, b); identity (1, 0) for a band with fewer than 3 cells or a constant input."""
    hr30 = truth_at_30m(hr, scale)
    ok = _clear_pairs(lr, hr30)
    out = np.tile([1.0, 0.0], (lr.shape[0], 1))
    if ok.sum() < 3:
        return out
    for b in range(lr.shape[0]):
        x, y = lr[b, ok].astype(np.float64), hr30[b, ok].astype(np.float64)
        if x.std() > 0:
            out[b] = np.polyfit(x, y, 1)
    return out


def apply_affine(img: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``a * img + b`` per band of ``img`` (C, H, W) with ``coef`` (C, 2) from :func:`affine_fit`."""
    return (img * coef[:, 0, None, None] + coef[:, 1, None, None]).astype(np.float32)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``a - b`` over chips and its paired percentile bootstrap interval
    (scipy.stats.bootstrap, chips resampled with replacement, seeded). Chips where either value
    is NaN are dropped. Returns ``mean``, ``lo``, ``hi`` and ``n``; NaN bounds when n < 2."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired bootstrap needs equal lengths, got {a.shape} and {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = int(d.size)
    if n < 2:
        return {"mean": float(d.mean()) if n else float("nan"), "lo": float("nan"), "hi": float("nan"), "n": n}
    if np.ptp(d) == 0:  # every resample has the same mean
        return {"mean": float(d[0]), "lo": float(d[0]), "hi": float(d[0]), "n": n}
    res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    rng=np.random.default_rng(seed))
    return {"mean": float(d.mean()), "lo": float(res.confidence_interval.low),
            "hi": float(res.confidence_interval.high), "n": n}


__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "QA_GAIN", "QA_MIN_R", "affine_fit", "apply_affine",
           "base_locations", "checkpoint_locations", "core", "paired_bootstrap", "radiometric_qa",
           "seen_locations", "truth_at_30m"]
