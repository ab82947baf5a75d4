"""Derived views of a finished store for display and per-pixel analysis.

**Overviews** (always, at finalize): the store's variables decimated by 2, 4, ... until the
longer edge is at most :data:`MIN_OVERVIEW_PX`, each level a Zarr v2 group
``overviews/<factor>/`` inside the store holding the same variables, encodings, ``spatial_ref``
and x/y coordinates as the root, so GDAL opens every level with its CRS and transform
(``ZARR:"store.zarr":/overviews/4/reflectance``) and xarray with ``open_zarr(..., group=)``.
Each level is computed from the one before it (as GDAL builds overviews), chunk by chunk:

============== ========================================================================
variable       resampling
============== ========================================================================
reflectance    ``average`` of the finite values of each 2 x 2 block (NaN if none)
trust layers   ``average`` as reflectance
valid          ``max``: 1 where any child is valid (then every band's average is finite)
crop_type      ``mode`` of the classified children (0 = nodata only if none is classified)
============== ========================================================================

The root's ``multiscales`` attribute lists the levels in the layout of the Zarr multiscales
convention (zarr-conventions/multiscales: ``asset``, ``derived_from``, ``transform.scale``,
``resampling_method``, ``proj:transform`` / ``proj:shape``); level 0 is the root itself (its
variables stay where every existing reader finds them), so the layout lists the overview groups.

**Time-series copy** (``--timeseries-copy``): ``<store>_ts.zarr`` next to the store, the same
variables and encodings rechunked to (time = all, band = all, y = :data:`TIMESERIES_CHUNK`,
x = :data:`TIMESERIES_CHUNK`), so one pixel's series is one chunk read instead of one per date.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from lssr_ray.fileio import settings_for
from lssr_ray.mapping.classify_stage import CROP_TYPE_VAR
from lssr_ray.mapping.store import VALID_VAR, finalize_store, open_store

OVERVIEWS_GROUP = "overviews"
"""Group of the overview levels inside the store."""
MIN_OVERVIEW_PX = 256
"""Overviews stop at the first level whose longer edge is at most this many pixels."""
TIMESERIES_CHUNK = 256
"""y/x chunk edge of the time-series copy."""
RESAMPLING = {VALID_VAR: "max", CROP_TYPE_VAR: "mode"}
"""Resampling per variable; every other (float) variable is averaged."""
MULTISCALES_UUID = "d35379db-88df-4056-af3a-620245f8e347"
"""The Zarr multiscales convention's id (zarr-conventions/multiscales)."""


def overview_factors(shape: tuple[int, int], *, min_px: int = MIN_OVERVIEW_PX) -> list[int]:
    """Decimation factors 2, 4, ... of a (height, width) grid: halving until the longer edge is
    at most ``min_px`` (none for a grid already that small)."""
    factors, f = [], 1
    while max(shape) / f > min_px:
        f *= 2
        factors.append(f)
    return factors


def _mode(a: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """Most frequent finite value over the window axes ``axis`` (NaN = no class; ties: the first
    in window order); the ``coarsen().reduce`` callback for categorical layers."""
    w = np.moveaxis(a, axis, tuple(range(-len(axis), 0)))
    w = w.reshape(*w.shape[: -len(axis)], -1)
    best = (w[..., :, None] == w[..., None, :]).sum(-1).argmax(-1)  # NaN equals nothing: count 0
    out = w[..., 0]
    for k in range(1, w.shape[-1]):  # plain where/argmax so a dask array stays lazy, chunk by chunk
        out = np.where(best == k, w[..., k], out)
    return out


def _halve(var: Any, name: str) -> Any:
    """One variable decimated by 2 in y and x with its resampling (:data:`RESAMPLING`)."""
    method = RESAMPLING.get(name, "average")
    if method == "average":
        return var.coarsen(y=2, x=2, boundary="pad").mean().astype(np.float32)
    if method == "max":
        return var.astype(np.float32).coarsen(y=2, x=2, boundary="pad").max().fillna(0).astype(var.dtype)
    classes = var.where(var > 0).astype(np.float32)
    return classes.coarsen(y=2, x=2, boundary="pad").reduce(_mode).fillna(0).astype(var.dtype)


def _encoding(var: Any, chunks: tuple[int, ...]) -> dict[str, Any]:
    """The root variable's on-disk encoding (dtype, packing, fill, grid mapping) with ``chunks``."""
    keep = ("dtype", "scale_factor", "add_offset", "_FillValue")
    enc = {k: var.encoding[k] for k in keep if k in var.encoding}
    if "_FillValue" in var.attrs:  # kept as an attribute by open_store's unmasked integers
        enc["_FillValue"] = var.attrs["_FillValue"]
    enc.setdefault("_FillValue", None)
    return {**enc, "chunks": chunks, "grid_mapping": "spatial_ref"}


def _chunks(var: Any, edge: int, *, whole_time: bool = False) -> tuple[int, ...]:
    sizes = dict(zip(var.dims, var.shape, strict=True))
    by_dim = {"time": sizes.get("time", 1) if whole_time else 1, "band": sizes.get("band", 1),
              "y": min(edge, sizes.get("y", 1)), "x": min(edge, sizes.get("x", 1))}
    return tuple(by_dim[d] for d in var.dims)


def _variables(ds: Any) -> dict[str, Any]:
    return {n: v for n, v in ds.data_vars.items() if {"y", "x"} <= set(v.dims)}


def _write(ds: Any, url: str, enc: dict[str, Any], storage_options: Mapping[str, Any] | None,
           **kwargs: Any) -> None:
    for name in enc:  # an attribute xarray also finds in the encoding is an error on write
        ds[name].attrs.pop("_FillValue", None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        ds.to_zarr(str(url), mode="w", zarr_format=2, encoding=enc,
                   storage_options=settings_for(url, storage_options) or None, **kwargs)


def build_overviews(url: str, *, storage_options: Mapping[str, Any] | None = None,
                    min_px: int = MIN_OVERVIEW_PX) -> dict[str, Any]:
    """Write the overview levels of a finished store (replacing earlier ones) and return the
    root attributes that describe them (``multiscales``, ``zarr_conventions``); empty for a
    store too small for any level. The caller records them and consolidates the metadata
    (:func:`~lssr_ray.mapping.store.finalize_store`)."""
    import xarray as xr
    from affine import Affine

    base = open_store(url, storage_options=storage_options)
    a, _, c, _, e, f0 = tuple(base.rio.transform())[:6]
    chunk = int(base[VALID_VAR].encoding["chunks"][-1])
    factors = overview_factors((base.sizes["y"], base.sizes["x"]), min_px=min_px)
    layout, prev, prev_asset = [], base, None
    for f in factors:
        names = _variables(prev)
        level = xr.Dataset({n: _halve(prev[n], n).drop_vars(["x", "y"], errors="ignore") for n in names})
        h, w = level.sizes["y"], level.sizes["x"]
        level = level.assign_coords(x=c + a * f * (np.arange(w) + 0.5), y=f0 + e * f * (np.arange(h) + 0.5))
        for n in names:
            level[n].attrs = dict(base[n].attrs)
        level.x.attrs.update(base.x.attrs)
        level.y.attrs.update(base.y.attrs)
        level = level.rio.write_crs(base.rio.crs).rio.write_transform(Affine(a * f, 0, c, 0, e * f, f0))
        level = level.rio.write_grid_mapping("spatial_ref")
        level.attrs = {"overview_factor": f, "resampling": {n: RESAMPLING.get(n, "average") for n in names}}
        enc = {n: _encoding(base[n], _chunks(level[n], chunk)) for n in names}
        level = level.drop_encoding().chunk({d: s for n in names for d, s in zip(level[n].dims, enc[n]["chunks"], strict=True)})
        asset = f"{OVERVIEWS_GROUP}/{f}"
        _write(level, url, enc, storage_options, group=asset, consolidated=False)
        finalize_store(url, storage_options=storage_options)  # the root's .zmetadata lists the new level
        entry: dict[str, Any] = {"asset": asset, "transform": {"scale": [2.0, 2.0] if prev_asset else [float(f)] * 2,
                                                               "translation": [0.0, 0.0]},
                                 "resampling_method": "average", "proj:transform": [a * f, 0.0, c, 0.0, e * f, f0],
                                 "proj:shape": [h, w]}
        if prev_asset:
            entry["derived_from"] = prev_asset
        layout.append(entry)
        prev, prev_asset = open_store(url, storage_options=storage_options, group=asset), asset
    if not layout:
        return {}
    return {"zarr_conventions": [{"uuid": MULTISCALES_UUID, "name": "multiscales",
                                  "spec_url": "https://github.com/zarr-conventions/multiscales"}],
            "multiscales": {"layout": layout, "resampling_method": "average",
                            "level_0": "the store's root group (full resolution)"}}


def timeseries_url(url: str) -> str:
    """``<store without .zarr>_ts.zarr``: where :func:`write_timeseries_copy` writes."""
    return str(url).rstrip("/").removesuffix(".zarr") + "_ts.zarr"


def write_timeseries_copy(url: str, *, storage_options: Mapping[str, Any] | None = None,
                          edge: int = TIMESERIES_CHUNK) -> str:
    """Write the store's variables rechunked for per-pixel time series to :func:`timeseries_url`
    (replacing an earlier copy): chunks (time = all, band = all, y = ``edge``, x = ``edge``), the
    same encodings, coordinates, CRS and attributes; returns its URL. A location there holding
    anything but an earlier copy (or nothing) is refused with a :class:`StoreError`, never emptied."""
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.output_target import STORE_FORMAT_VERSION, STORE_MARKER, output_state

    ds = open_store(url, storage_options=storage_options)
    names = _variables(ds)
    enc = {n: _encoding(ds[n], _chunks(ds[n], edge, whole_time=True)) for n in names}
    out = ds[list(names)].drop_encoding().chunk({d: s for n in names for d, s in zip(ds[n].dims, enc[n]["chunks"], strict=True)})
    out.attrs = {**ds.attrs, "timeseries_copy_of": portable_ref(url), "chunking": f"time=all, y={edge}, x={edge}",
                 STORE_MARKER: STORE_FORMAT_VERSION}  # ours: a later copy may replace it
    out.attrs.pop("multiscales", None)
    out.attrs.pop("zarr_conventions", None)
    target = timeseries_url(url)
    output_state(target, storage_options=storage_options)  # refuses (StoreError) anything not ours to replace
    _write(out, target, enc, storage_options, consolidated=True)
    return target


__all__ = ["MIN_OVERVIEW_PX", "OVERVIEWS_GROUP", "RESAMPLING", "TIMESERIES_CHUNK", "build_overviews",
           "overview_factors", "timeseries_url", "write_timeseries_copy"]
