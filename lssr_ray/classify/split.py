"""Spatially separated train/test split of a label raster.

Neighbouring pixels of one field are nearly the same sample; putting them on both sides of a
split inflates accuracy. Here whole *fields* go to one side: a field is a connected component of
pixels with the same crop-type code (8-connectivity by default, so diagonal touches count).
Per class, the fields are visited in an order shuffled with ``seed`` and each goes to test while
the class's test pixels stay <= ``test_fraction`` of its pixels; if every field is larger than
that, the smallest field alone goes to test (so >= 1 field always stays in train).
A class with a single field cannot be on both sides: it stays in train only and is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lssr_ray.errors import ConfigError

__all__ = ["SpatialSplit", "field_components", "spatial_split"]


@dataclass(frozen=True)
class SpatialSplit:
    """Boolean train/test masks over the label grid plus what went where."""

    train: np.ndarray
    """(H, W) bool: labelled pixels used for training."""
    test: np.ndarray
    """(H, W) bool: labelled pixels held out; no field has pixels in both masks."""
    fields: np.ndarray
    """(H, W) int32 field id (connected component), 0 = unlabelled."""
    fields_per_class: dict[int, dict[str, int]] = field(default_factory=dict)
    """code -> {"train_fields", "test_fields", "train_pixels", "test_pixels"}."""
    train_only: tuple[int, ...] = ()
    """Codes with a single field: in train only, so they cannot be evaluated."""

    def summary(self) -> dict:
        """JSON-able counts for reports."""
        return {
            "train_pixels": int(self.train.sum()),
            "test_pixels": int(self.test.sum()),
            "per_class": {str(k): v for k, v in self.fields_per_class.items()},
            "train_only_codes": list(self.train_only),
        }


def field_components(labels: np.ndarray, *, nodata: int = 0, connectivity: int = 8) -> np.ndarray:
    """(H, W) codes -> (H, W) int32 field ids (1..N), 0 where ``labels == nodata``."""
    from scipy import ndimage

    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = np.zeros(labels.shape, np.int32)
    next_id = 0
    for code in np.unique(labels):
        if code == nodata:
            continue
        lab, n = ndimage.label(labels == code, structure=structure)
        out[lab > 0] = lab[lab > 0] + next_id
        next_id += n
    return out


def spatial_split(
    labels: np.ndarray,
    test_fraction: float = 0.3,
    *,
    seed: int = 0,
    nodata: int = 0,
    connectivity: int = 8,
) -> SpatialSplit:
    """Split labelled pixels into train/test by whole fields, per class, deterministically.

    ``labels`` (H, W) integer crop-type codes, ``nodata`` = unlabelled. ``test_fraction`` in
    (0, 1) is the target share of each class's pixels in test (met as closely as whole fields
    allow). The same ``seed`` and labels give the same split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    fields = field_components(labels, nodata=nodata, connectivity=connectivity)
    sizes = np.bincount(fields.ravel())
    rng = np.random.default_rng(seed)
    test_ids: list[int] = []
    per_class: dict[int, dict[str, int]] = {}
    train_only = []
    for code in np.unique(labels):
        if code == nodata:
            continue
        ids = np.unique(fields[labels == code])
        total = int(sizes[ids].sum())
        chosen: list[int] = []
        if len(ids) >= 2:
            target, n_chosen = test_fraction * total, 0
            for i in rng.permutation(ids):  # fill up to the target, never beyond it
                if n_chosen + sizes[i] <= target:
                    chosen.append(int(i))
                    n_chosen += int(sizes[i])
            if not chosen:  # every field is larger than the target: hold out the smallest
                chosen = [int(ids[np.argmin(sizes[ids])])]
        else:
            train_only.append(int(code))
        test_ids += chosen
        n_test = int(sizes[chosen].sum()) if chosen else 0
        per_class[int(code)] = {
            "train_fields": len(ids) - len(chosen), "test_fields": len(chosen),
            "train_pixels": total - n_test, "test_pixels": n_test,
        }
    test = np.isin(fields, test_ids) & (fields > 0)
    train = (fields > 0) & ~test
    return SpatialSplit(train, test, fields, per_class, tuple(train_only))
