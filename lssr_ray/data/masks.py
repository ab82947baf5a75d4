"""Clear-sky masks from the three QA encodings in the samples and archive.

Every ``clear_*`` function returns a boolean array of the input's shape: True = a clear,
valid observation usable for super-resolution and training; False = fill, cloud, cloud
shadow, snow/ice (and whatever the options exclude).

Encodings:

* HLS v2.0 Fmask (uint8): see :mod:`lssr_ray.data.hls` (bit 0 cirrus, 1 cloud, 2 adjacent,
  3 shadow, 4 snow/ice, 5 water, 6-7 aerosol; 255 fill).
* Landsat Collection-1 surface-reflectance ``pixel_qa`` (uint16): bit 0 fill, 1 clear,
  2 water, 3 cloud shadow, 4 snow, 5 cloud, 6-7 cloud confidence, 8-9 cirrus confidence
  (OLI only), 10 terrain occlusion. 322 = clear land, low cloud, low cirrus confidence.
* Landsat-8 pre-collection L1 ``BQA`` (uint16): bit 0 fill, 1 dropped frame, 2 terrain
  occlusion, 4-5 water, 8-9 vegetation, 10-11 snow/ice, 12-13 cirrus, 14-15 cloud
  confidence (0 not determined, 1 no, 2 maybe, 3 yes).
* Sentinel-2 Sen2Cor ``SCL`` (uint8): 0 no data, 1 saturated/defective, 2 dark area,
  3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium
  probability, 9 cloud high probability, 10 thin cirrus, 11 snow/ice.
"""

from __future__ import annotations

import numpy as np

from lssr_ray.data import hls
from lssr_ray.errors import ConfigError

#: SCL classes counted as clear by default: vegetation, not vegetated, water. Dark areas (2)
#: and unclassified (7) are often shadow/cloud edges in Sen2Cor, and snow (11) cannot be
#: super-resolved like land, so they are excluded unless asked for.
SCL_CLEAR_DEFAULT = (4, 5, 6)
SCL_CLOUD = (3, 8, 9, 10)
SCL_NODATA = (0, 1)
SCL_CLASSES = {
    0: "no_data", 1: "saturated_or_defective", 2: "dark_area_pixels", 3: "cloud_shadows",
    4: "vegetation", 5: "not_vegetated", 6: "water", 7: "unclassified",
    8: "cloud_medium_probability", 9: "cloud_high_probability", 10: "thin_cirrus", 11: "snow",
}


def _bits(a: np.ndarray, shift: int, width: int = 1) -> np.ndarray:
    return (a >> shift) & ((1 << width) - 1)


def clear_from_fmask(
    fmask: np.ndarray, *, mask_cirrus: bool = False, mask_adjacent: bool = True,
    mask_snow: bool = True, mask_water: bool = False,
) -> np.ndarray:
    """Clear-sky mask from HLS v2.0 Fmask: not fill, not cloud, not shadow (+ options).

    ``mask_cirrus`` is off by default because HLS v2.0 lists bit 0 as reserved (cirrus is
    folded into the cloud bit); the archive sets it only from the source's high cirrus confidence.
    """
    f = hls.decode_fmask(fmask)
    bad = f["fill"] | f["cloud"] | f["shadow"]
    if mask_adjacent:
        bad |= f["adjacent"]
    if mask_cirrus:
        bad |= f["cirrus"]
    if mask_snow:
        bad |= f["snow"]
    if mask_water:
        bad |= f["water"]
    return ~bad


def decode_pixel_qa(qa: np.ndarray) -> dict[str, np.ndarray]:
    """Landsat C1 SR ``pixel_qa`` -> bool layers + ``cloud_conf``/``cirrus_conf`` (0..3)."""
    q = np.asarray(qa).astype(np.uint16)
    return {
        "fill": _bits(q, 0).astype(bool) | (q == 0),  # 0 is also the NetCDF _FillValue
        "clear": _bits(q, 1).astype(bool), "water": _bits(q, 2).astype(bool),
        "shadow": _bits(q, 3).astype(bool), "snow": _bits(q, 4).astype(bool),
        "cloud": _bits(q, 5).astype(bool),
        "cloud_conf": _bits(q, 6, 2).astype(np.uint8), "cirrus_conf": _bits(q, 8, 2).astype(np.uint8),
        "terrain_occlusion": _bits(q, 10).astype(bool),
    }


def clear_from_pixel_qa(qa: np.ndarray, *, mask_cirrus: bool = True) -> np.ndarray:
    """Clear-sky mask from Landsat C1 SR ``pixel_qa``.

    Clear = clear or water bit set, and no fill, shadow, snow, cloud or terrain-occlusion bit;
    with ``mask_cirrus`` also cirrus confidence below high (bits 8-9 != 3).
    """
    d = decode_pixel_qa(qa)
    ok = (d["clear"] | d["water"]) & ~(d["fill"] | d["shadow"] | d["snow"] | d["cloud"]
                                       | d["terrain_occlusion"])
    if mask_cirrus:
        ok &= d["cirrus_conf"] != 3
    return ok


def decode_bqa_precollection(bqa: np.ndarray) -> dict[str, np.ndarray]:
    """Landsat-8 pre-collection ``BQA`` -> ``fill``, ``dropped``, ``terrain`` bools and
    ``water``, ``vegetation``, ``snow``, ``cirrus``, ``cloud`` confidences (0..3)."""
    q = np.asarray(bqa).astype(np.uint16)
    return {
        "fill": _bits(q, 0).astype(bool), "dropped": _bits(q, 1).astype(bool),
        "terrain": _bits(q, 2).astype(bool),
        "water": _bits(q, 4, 2).astype(np.uint8), "vegetation": _bits(q, 8, 2).astype(np.uint8),
        "snow": _bits(q, 10, 2).astype(np.uint8), "cirrus": _bits(q, 12, 2).astype(np.uint8),
        "cloud": _bits(q, 14, 2).astype(np.uint8),
    }


def clear_from_bqa_precollection(bqa: np.ndarray, *, min_conf: int = 3, mask_cirrus: bool = False) -> np.ndarray:
    """Clear-sky mask from the pre-collection ``BQA``: no fill/dropped frame, cloud and snow
    confidence below ``min_conf`` (3 = "yes", 2 = "maybe"). Cirrus is off by default: the
    pre-collection cirrus flag marks about a third of the Alabama crop as high confidence."""
    if min_conf not in (1, 2, 3):
        raise ConfigError(f"min_conf must be 1, 2 or 3 (no, maybe, yes), got {min_conf}")
    d = decode_bqa_precollection(bqa)
    ok = ~(d["fill"] | d["dropped"]) & (d["cloud"] < min_conf) & (d["snow"] < min_conf)
    if mask_cirrus:
        ok &= d["cirrus"] < min_conf
    return ok


def clear_from_scl(scl: np.ndarray, *, clear_classes: tuple[int, ...] = SCL_CLEAR_DEFAULT) -> np.ndarray:
    """Clear-sky mask from Sentinel-2 SCL: True where the class is in ``clear_classes``.

    Default (4, 5, 6): vegetation, not vegetated, water. Cloud classes (3, 8, 9, 10) and
    no-data classes (0, 1) may not be listed as clear.
    """
    bad = set(clear_classes) & set(SCL_CLOUD + SCL_NODATA)
    unknown = set(clear_classes) - set(SCL_CLASSES)
    if bad or unknown:
        raise ConfigError(
            f"clear_classes {tuple(clear_classes)} contains cloud/no-data or unknown classes "
            f"{sorted(bad | unknown)}; choose from {sorted(set(SCL_CLASSES) - set(SCL_CLOUD + SCL_NODATA))}"
        )
    return np.isin(np.asarray(scl), np.asarray(clear_classes))


def clear_mask(qa: np.ndarray, kind: str, **options) -> np.ndarray:
    """Dispatch on ``kind``: ``"fmask"``, ``"pixel_qa"``, ``"bqa"`` or ``"scl"``."""
    funcs = {"fmask": clear_from_fmask, "pixel_qa": clear_from_pixel_qa,
             "bqa": clear_from_bqa_precollection, "scl": clear_from_scl}
    if kind not in funcs:
        raise ConfigError(f"unknown QA kind {kind!r}; valid: {sorted(funcs)}")
    return funcs[kind](qa, **options)


__all__ = [
    "SCL_CLASSES", "SCL_CLEAR_DEFAULT", "SCL_CLOUD", "SCL_NODATA", "clear_from_bqa_precollection",
    "clear_from_fmask", "clear_from_pixel_qa", "clear_from_scl", "clear_mask",
    "decode_bqa_precollection", "decode_pixel_qa",
]
