"""Write one single-band Cloud-Optimized GeoTIFF the way HLS v2.0 files are written.

The one COG writer of the project: ``scripts/build_archive.py`` (the bundled archive) and
``scripts/make_hls_cogs.py`` (full-size 3660 x 3660 granules for the read benchmark and the end
to end test) both call :func:`write_cog`.

Encoding (both layouts): one band per file, DEFLATE, horizontal predictor (2) for integers and
floating-point predictor (3) for floats, 256 x 256 internal tiles, nearest-neighbour overviews
halving until the smallest is no larger than a tile (3660 -> 1830, 915, 458, 229), band scale
and offset in the GDAL band metadata, and the HDF-style band tags HLS files carry
(``long_name``, ``scale_factor``, ``add_offset``, ``_FillValue``; optional ``units``).

Two layouts (:class:`CogLayout`):

* :data:`ARCHIVE_LAYOUT`, GDAL's COG driver with DEFLATE level 9 and overviews tiled like the
  full resolution (256). The bundled archive is written with it; its bytes must not change.
* :data:`HLS_LAYOUT`, what LP DAAC's HLS v2.0 files are: rio-cogeo's ``deflate`` profile (level
  left at GDAL's default), predictor 2, 256 x 256 tiles, **128 x 128 overview tiles**
  (``GDAL_TIFF_OVR_BLOCKSIZE=128``), written as a tiled GeoTIFF with its overviews and then
  copied with ``COPY_SRC_OVERVIEWS=YES`` (the COG driver tiles overviews like the main image).
  Sources: NASA-IMPACT/hls-hdf_to_cog ``hls_hdf_to_cog/hls_hdf_to_cog.py`` (commit 039c5c29),
  the converter that writes HLS v2.0 COGs; the IFD chain of a real HLSL30 B04 COG recorded in
  developmentseed/icechest (3660 tile 256; 1830, 915, 458, 229 tile 128).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CogLayout:
    """How a COG is tiled and compressed."""

    blocksize: int = 256
    """Edge of the full-resolution internal tiles (pixels)."""
    overview_blocksize: int | None = None
    """Edge of the overview tiles; None: the same as ``blocksize`` (GDAL's COG driver)."""
    deflate_level: int | None = 9
    """DEFLATE level 1..9; None leaves GDAL's default (6)."""


ARCHIVE_LAYOUT = CogLayout()
"""The bundled archive's layout (COG driver, DEFLATE 9, 256 tiles at every level)."""
HLS_LAYOUT = CogLayout(blocksize=256, overview_blocksize=128, deflate_level=None)
"""LP DAAC's HLS v2.0 layout (256 tiles, 128 overview tiles, default DEFLATE level)."""


def overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """Decimation factors 2, 4, ... while the previous level is larger than one tile
    (rio-cogeo's and GDAL's rule: 3660 px with 256 tiles -> [2, 4, 8, 16])."""
    factors, f = [], 1
    while min(height, width) // f > blocksize:
        f *= 2
        factors.append(f)
    return factors


def band_tags(description: str, *, scale: float | None, nodata: float | None,
              unit: str | None = None) -> dict[str, str]:
    """The HDF-style band tags of an HLS band (``long_name``, ``scale_factor``...)."""
    tags = {"long_name": description}
    if scale is not None:
        tags.update(scale_factor=str(scale), add_offset="0.0")
    if nodata is not None:
        tags["_FillValue"] = str(nodata)
    if unit:
        tags["units"] = unit
    return tags


def write_cog(path: str | os.PathLike, array: np.ndarray, *, crs: Any, transform: Any,
              nodata: float | None, scale: float | None = None, description: str = "",
              tags: Mapping[str, Any] | None = None, unit: str | None = None,
              layout: CogLayout = ARCHIVE_LAYOUT) -> None:
    """Write ``array`` (y, x) to ``path`` as a one-band COG (see the module docstring).

    ``crs`` is anything rasterio takes (``"EPSG:32615"``); ``transform`` an Affine or its six
    coefficients; ``tags`` the dataset tags (values turned into strings); ``scale`` also sets
    the band's GDAL scale (offset 0).
    """
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"write_cog takes one band (y, x); got shape {arr.shape}")
    profile = {"driver": "GTiff", "dtype": arr.dtype.name, "count": 1, "height": arr.shape[0],
               "width": arr.shape[1], "crs": crs, "transform": Affine(*tuple(transform)[:6]),
               "nodata": nodata}
    predictor = "3" if np.issubdtype(arr.dtype, np.floating) else "2"
    level = {} if layout.deflate_level is None else {"LEVEL": str(layout.deflate_level)}
    staged = layout.overview_blocksize not in (None, layout.blocksize)
    if staged:  # tiled GTiff with its own overviews, copied below (rio-cogeo's way)
        profile.update(tiled=True, blockxsize=layout.blocksize, blockysize=layout.blocksize)
    # overview tile size: read by GDAL when overviews are built and when they are copied
    env = rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=str(layout.overview_blocksize)) if staged else contextlib.nullcontext()
    with env, MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr, 1)
            if scale is not None:
                dst.scales, dst.offsets = (scale,), (0.0,)
            dst.set_band_description(1, description)
            dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
            dst.update_tags(1, **band_tags(description, scale=scale, nodata=nodata, unit=unit))
            if staged:
                dst.build_overviews(overview_factors(*arr.shape, layout.blocksize), Resampling.nearest)
        with mem.open() as src:
            if staged:
                rasterio.shutil.copy(src, str(path), driver="GTiff", COPY_SRC_OVERVIEWS="YES", TILED="YES",
                                     BLOCKXSIZE=str(layout.blocksize), BLOCKYSIZE=str(layout.blocksize),
                                     COMPRESS="DEFLATE", PREDICTOR=predictor, **level)
            else:
                rasterio.shutil.copy(src, str(path), driver="COG", COMPRESS="DEFLATE", PREDICTOR=predictor,
                                     BLOCKSIZE=str(layout.blocksize), OVERVIEW_RESAMPLING="NEAREST", **level)

__all__ = ["ARCHIVE_LAYOUT", "HLS_LAYOUT", "CogLayout", "band_tags", "overview_factors", "write_cog"]
