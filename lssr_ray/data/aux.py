"""Aux layers (DEM, land cover, Sentinel-1 SAR) warped onto a chip's 10 m grid.

Resampling: bilinear for continuous layers (DEM metres, SAR sigma0 dB), nearest for land-cover
classes when the source is as fine or coarser than the target, mode when it is finer (so a
class never becomes an average of codes). A layer in another CRS is reprojected with
:func:`rasterio.warp.reproject`. A missing layer gives NaN (DEM/SAR) or 0 (land cover) and
``present`` = 0 for that layer, as the batch contract in docs/ARCHITECTURE.md says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine

from lssr_ray.data.readers import open_raster
from lssr_ray.errors import ConfigError, MissingDataError

AUX_KINDS = ("dem", "landcover", "sar")
"""Aux layer names, in the order of the ``present`` vector."""


def warp_layer(
    href: str,
    crs: str,
    *,
    transform: Affine,
    shape: tuple[int, int],
    kind: str,
) -> np.ndarray:
    """Warp layer ``href`` onto (``crs``, ``transform``, ``shape``) -> (bands, h, w).

    ``kind`` picks dtype and resampling: ``"dem"``/``"sar"`` -> float32 bilinear, NaN outside
    or nodata; ``"landcover"`` -> int64 nearest/mode, 0 outside or nodata.
    """
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    if kind not in AUX_KINDS:
        raise ConfigError(f"unknown aux kind {kind!r}; valid: {AUX_KINDS}")
    with open_raster(href) as src:
        if src.crs is None:
            from lssr_ray.errors import CRSMismatchError

            raise CRSMismatchError(f"aux layer {href} has no CRS; cannot warp it onto {crs}")
        src_nodata = src.nodata
        if kind == "landcover":
            finer = abs(src.transform.a) < abs(transform.a) - 1e-9
            rs = Resampling.mode if finer else Resampling.nearest
            dst = np.zeros((src.count, *shape), dtype=np.int32)
            dst_nodata: float = 0
        else:
            rs = Resampling.bilinear
            dst = np.full((src.count, *shape), np.nan, dtype=np.float32)
            dst_nodata = np.nan
        import rasterio

        reproject(
            source=rasterio.band(src, list(range(1, src.count + 1))),
            destination=dst,
            src_nodata=src_nodata,
            dst_transform=transform,
            dst_crs=CRS.from_user_input(crs),
            dst_nodata=dst_nodata,
            resampling=rs,
        )
    return dst.astype(np.int64) if kind == "landcover" else dst


@dataclass(frozen=True)
class AuxArrays:
    """Aux inputs of one chip on its 10 m grid (batch contract shapes without the batch dim)."""

    dem: np.ndarray
    """float32 (1, H, W) metres, NaN missing."""
    landcover: np.ndarray
    """int64 (1, H, W) class index, 0 unknown."""
    sar: np.ndarray
    """float32 (2, H, W) VV, VH sigma0 dB, NaN missing."""
    present: np.ndarray
    """float32 (3,) 1 where dem / landcover / sar exist for the chip."""


def read_aux(
    layers: Mapping[str, str | Sequence[str] | None],
    crs: str,
    *,
    transform: Affine,
    shape: tuple[int, int],
    strict: bool = False,
) -> AuxArrays:
    """Warp the aux layers named in ``layers`` (``dem``, ``landcover``, ``sar`` -> href) onto a grid.

    ``sar`` is a 2-band (VV, VH dB) raster or a pair of 1-band hrefs ``(vv, vh)``. A layer missing from ``layers`` (or None), or
    one that cannot be opened when ``strict`` is False, is filled (NaN / 0) with present = 0.
    A layer that has no valid pixel on the grid is also reported absent.
    """
    unknown = sorted(set(layers) - set(AUX_KINDS))
    if unknown:
        raise ConfigError(f"unknown aux layers {unknown}; valid: {AUX_KINDS}")
    h, w = shape
    out = {
        "dem": np.full((1, h, w), np.nan, np.float32),
        "landcover": np.zeros((1, h, w), np.int64),
        "sar": np.full((2, h, w), np.nan, np.float32),
    }
    present = np.zeros(3, np.float32)
    for i, kind in enumerate(AUX_KINDS):
        href = layers.get(kind)
        if not href:
            continue
        hrefs = [href] if isinstance(href, str) else list(href)
        try:
            arr = np.concatenate([warp_layer(h, crs, transform=transform, shape=shape, kind=kind) for h in hrefs])
        except MissingDataError:
            if strict:
                raise
            continue
        n = out[kind].shape[0]
        if arr.shape[0] < n:
            raise MissingDataError(f"aux layer {kind} at {href} has {arr.shape[0]} band(s); {n} needed")
        arr = arr[:n]
        has = bool((arr != 0).any()) if kind == "landcover" else bool(np.isfinite(arr).any())
        if has:
            out[kind] = arr
            present[i] = 1.0
    return AuxArrays(out["dem"], out["landcover"], out["sar"], present)


__all__ = ["AUX_KINDS", "AuxArrays", "read_aux", "warp_layer"]
