"""The trust layer of the mapping store: ``consistency`` and ``uncertainty`` next to ``reflectance``.

Both are per band on the store's 10 m (time, band, y, x) grid and travel the same path as the
reflectance: computed per chip by the predictor, committed in the chip's partial, blended across
chip overlaps by :func:`~lssr_ray.mapping.blend.blend_chunk`, written by the chunk's one region
write (so they resume with it). The per-chip numbers come from :mod:`lssr_ray.model.trust`
(one owner); this module only names, encodes and places them.

- ``consistency`` (always on, cheap): the 10 m output degraded with the sensor PSF back to 30 m
  minus the 30 m input (:func:`lssr_ray.model.trust.consistency`); each 30 m cell's value is
  repeated over its 3 x 3 10 m children.
- ``uncertainty`` (``--uncertainty``, several forward passes): the per-pixel standard deviation
  of the output over the test-time variants :data:`lssr_ray.model.trust.DEFAULT_VARIANTS`
  (:func:`lssr_ray.model.trust.uncertainty`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lssr_ray.config import SCALE

CONSISTENCY_VAR = "consistency"
"""Store variable: PSF-degraded output minus input, per band, on the 10 m grid."""
UNCERTAINTY_VAR = "uncertainty"
"""Store variable: spread of the output over test-time variants, per band (``--uncertainty``)."""
TRUST_VARS: tuple[str, ...] = (CONSISTENCY_VAR, UNCERTAINTY_VAR)
"""Every trust variable, in store order."""
TRUST_SCALE = 0.0001
"""CF scale factor of the int16 trust variables (reflectance units, as ``reflectance``)."""
TRUST_FILL = -32768
"""CF ``_FillValue`` of the int16 trust variables (the reflectance's -9999 would be a real
value here: a consistency of -0.9999 is possible)."""
TRUST_LIMIT = 32767 * TRUST_SCALE
"""Largest magnitude an int16 trust value can hold; larger values are clipped to it."""


def trust_vars(uncertainty: bool) -> tuple[str, ...]:
    """The trust variables a run writes: consistency always, uncertainty with the switch."""
    return TRUST_VARS if uncertainty else (CONSISTENCY_VAR,)


def trust_attrs(name: str) -> dict[str, Any]:
    """CF attributes of one trust variable."""
    from lssr_ray.model.trust import DEFAULT_VARIANTS

    if name == CONSISTENCY_VAR:
        return {
            "long_name": "PSF-degraded 10 m output minus 30 m input",
            "units": "1",
            "description": (
                "per band: the 10 m reflectance degraded with the sensor PSF (Gaussian blur, 3x3 block "
                "mean; lssr_ray.data.psf.degrade) back to 30 m, minus the 30 m input reflectance; what "
                "the model changed that the sensor could have seen (0 = consistent with the input). "
                "Computed per chip at 30 m; each 30 m cell's value is repeated over its 3x3 10 m "
                "children and blended across chip overlaps like reflectance."),
        }
    if name == UNCERTAINTY_VAR:
        return {
            "long_name": "spread of the 10 m output over test-time variants",
            "units": "1",
            "description": (
                "per band and 10 m pixel: standard deviation (reflectance) of the model output over "
                f"the test-time variants {list(DEFAULT_VARIANTS)} (flips / rotations of the inputs with "
                "the output turned back, SAR dropout); blended across chip overlaps like reflectance."),
            "variants": list(DEFAULT_VARIANTS),
        }
    raise KeyError(f"unknown trust variable {name!r}; valid: {list(TRUST_VARS)}")


def trust_encoding(chunks: tuple[int, ...]) -> dict[str, Any]:
    """Zarr encoding of a trust variable: int16, scale :data:`TRUST_SCALE`, fill :data:`TRUST_FILL`."""
    return {"dtype": "int16", "scale_factor": TRUST_SCALE, "add_offset": 0.0, "_FillValue": TRUST_FILL,
            "chunks": chunks, "grid_mapping": "spatial_ref"}


def clip_trust(values: np.ndarray) -> np.ndarray:
    """float32 values clipped to what the int16 encoding holds (NaN kept: it is written as fill)."""
    a = np.asarray(values, np.float32)
    return np.where(np.isfinite(a), np.clip(a, -TRUST_LIMIT, TRUST_LIMIT), np.nan).astype(np.float32)


def consistency_10m(sr: np.ndarray, lr: np.ndarray, *, scale: int = SCALE) -> np.ndarray:
    """:func:`lssr_ray.model.trust.consistency` of (B, C, 3h, 3w) ``sr`` against (B, C, h, w) ``lr``,
    each 30 m cell repeated over its ``scale`` x ``scale`` children: (B, C, 3h, 3w) float32."""
    from lssr_ray.model.trust import consistency

    c30 = consistency(sr, lr, scale=scale)
    return np.repeat(np.repeat(c30, scale, axis=-2), scale, axis=-1).astype(np.float32)


def predict_with_trust(predict: Callable[[dict[str, Any]], np.ndarray], batch: Mapping[str, np.ndarray], *,
                       scale: int = SCALE, uncertainty: bool = False) -> dict[str, np.ndarray]:
    """``{"sr", "consistency"[, "uncertainty"]}`` (B, C, 3h, 3w) for a batch of valid chips.

    ``predict`` maps the batch contract to ``sr`` (the engine behind it: torch, onnxruntime,
    tensorrt or bicubic). With ``uncertainty`` the plain prediction is the variants' ``identity``
    output, so the switch costs ``len(DEFAULT_VARIANTS) - 1`` extra forward passes, not more.
    """
    from lssr_ray.model.trust import DEFAULT_VARIANTS
    from lssr_ray.model.trust import uncertainty as spread

    b = dict(batch)
    out: dict[str, np.ndarray] = {}
    if uncertainty:
        variants = ("identity", *(v for v in DEFAULT_VARIANTS if v != "identity"))  # the plain one included
        out[UNCERTAINTY_VAR], outs = spread(predict, b, variants, return_outputs=True)
        out["sr"] = outs["identity"]
    else:
        out["sr"] = np.asarray(predict(b), np.float32)
    out[CONSISTENCY_VAR] = consistency_10m(out["sr"], np.asarray(b["lr"], np.float32), scale=scale)
    return out


__all__ = ["CONSISTENCY_VAR", "TRUST_FILL", "TRUST_LIMIT", "TRUST_SCALE", "TRUST_VARS", "UNCERTAINTY_VAR",
           "clip_trust", "consistency_10m", "predict_with_trust", "trust_attrs", "trust_encoding", "trust_vars"]
