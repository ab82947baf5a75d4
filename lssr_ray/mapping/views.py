"""Derived views of a finished store for display and per-pixel analysis.

**Overviews** (always, at finalize): the store's variables decimated by 2, 4, ... until the
longer edge is at most :data:`MIN_OVERVIEW_PX`, each level a Zarr v2 group
``overviews/<factor>/`` inside the store holding the same variables, encodings, ``spatial_ref``
and x/y coordinates as the root, so GDAL opens every level with its CRS and transform
(``ZARR:"store.zarr":/overviews/4/reflectance``) and xarray with ``open_zarr(..., group=)``.
Each level is computed from the one before it (as GDAL builds overviews), one task per output
chunk and date (:func:`overview_chunk_tasks`, run by :mod:`lssr_ray.mapping.stage_views`: a Ray
Data stage, or in this process for small stores) after the driver wrote the level's template:

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
x = :data:`TIMESERIES_CHUNK`), so one pixel's series is one chunk read instead of one per date;
one task per output chunk (:func:`timeseries_chunk_tasks`) reads its window from the store.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from lssr_ray.fileio import settings_for
from lssr_ray.mapping.classify_stage import CROP_TYPE_VAR
from lssr_ray.mapping.stage_views import IN_PROCESS_MAX_TASKS, chunk_task_ray, run_chunk_tasks
from lssr_ray.mapping.store import UNMASKED_VARS, VALID_VAR, finalize_store, region_write

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


def open_windowed(url: str, storage_options: Mapping[str, Any] | None = None, group: str | None = None) -> Any:
    """The store (or one of its groups) decoded as :func:`~lssr_ray.mapping.store.open_store`
    does, but without dask (``chunks=None``): lazily indexed, so opening costs the same for any
    number of chunks (no dask graph of one task per chunk) and a reader takes only its window
    with :func:`read_window`: the per-chunk tasks here, the quicklooks."""
    import rioxarray  # noqa: F401  (the .rio accessor: CRS and transform from spatial_ref)
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        return xr.open_zarr(str(url), group=group, chunks=None, decode_coords="all",
                            mask_and_scale=dict.fromkeys(UNMASKED_VARS, False),
                            storage_options=settings_for(url, storage_options) or None)


def read_window(var: Any, **window: Any) -> Any:
    """``var``'s window, loaded; packed integers as float32, as ``open_store`` gives them (its
    cast cannot be used lazily: on a variable opened without dask it loads the whole array)."""
    out = var.isel({d: s for d, s in window.items() if d in var.dims}).load()
    return out.astype(np.float32) if "scale_factor" in var.encoding and out.dtype != np.float32 else out


def _template(like: Any, names: Mapping[str, Any], shape: tuple[int, int]) -> Any:
    """A dataset of ``names`` shaped as ``like``'s variables with (y, x) = ``shape``, holding one
    unwritten dask chunk per variable: ``to_zarr(compute=False)`` writes its metadata only."""
    import dask.array as da

    out = like.drop_dims(["y", "x"])  # the coordinates along time/band, with their encodings
    out = out.drop_vars([*out.data_vars, *(["spatial_ref"] if "spatial_ref" in out.coords else [])]).load()
    out.attrs = {}
    for n in names:
        v = like[n]
        dims_shape = tuple(shape[("y", "x").index(d)] if d in ("y", "x") else v.sizes[d] for d in v.dims)
        dtype = np.float32 if RESAMPLING.get(n, "average") == "average" else v.dtype
        out[n] = (v.dims, da.empty(dims_shape, dtype=dtype, chunks=dims_shape), dict(v.attrs))
    return out


def _grid(shape: tuple[int, int], edge: int) -> tuple[int, int]:
    return -(-shape[0] // edge), -(-shape[1] // edge)


def _region_write_by_dims(arrays: Mapping[str, Any], url: str, group: str | None, region: Mapping[str, slice],
                          storage_options: Mapping[str, Any] | None) -> None:
    """Region-write computed chunk arrays, one write per set of dimensions (time-less ``crop_type``
    apart from the time-stacked layers: a region names only the dimensions its data has)."""
    import xarray as xr

    by_dims: dict[tuple[str, ...], dict[str, Any]] = {}
    for n, a in arrays.items():
        by_dims.setdefault(tuple(a.dims), {})[n] = xr.DataArray(a.values, dims=a.dims)
    for dims, group_vars in by_dims.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
            region_write(xr.Dataset(group_vars), url, {d: region[d] for d in dims}, storage_options, group=group)


def _has_data(a: Any, name: str) -> bool:
    v = a.values
    return bool(np.isfinite(v).any()) if RESAMPLING.get(name, "average") == "average" else bool(v.any())


def overview_chunk_tasks(batch: dict[str, np.ndarray], *, url: str, src: str | None, dst: str, names: list[str],
                         shape: tuple[int, int], chunk: int, storage_options: Mapping[str, Any] | None
                         ) -> dict[str, np.ndarray]:
    """Chunk tasks of one overview level (:func:`~lssr_ray.mapping.stage_views.run_chunk_tasks`):
    task id -> (time, chunk row, chunk col) of level ``dst`` (``shape``); each reads the 2 x 2
    window of ``src`` (None: the root), halves it (:func:`_halve`) and region-writes the chunk.
    Time-less variables are written by the time-0 tasks; windows without data are left unwritten
    (they read back as fill). Returns ``{"written": 1 per chunk written}``."""
    nr, nc = _grid(shape, chunk)
    ds = open_windowed(url, storage_options, src)
    written = np.zeros(len(batch["id"]), np.int64)
    for k, task in enumerate(batch["id"]):
        ti, rc = divmod(int(task), nr * nc)
        r0, c0 = (rc // nc) * chunk, (rc % nc) * chunk
        src_window = {"time": slice(ti, ti + 1), "y": slice(2 * r0, 2 * (r0 + chunk)), "x": slice(2 * c0, 2 * (c0 + chunk))}
        windows = {n: read_window(ds[n], **src_window).drop_vars(["y", "x"], errors="ignore")
                   for n in names if "time" in ds[n].dims or ti == 0}
        # a window without data halves to fill: skip the reduction and the write (sparse regions)
        out = {n: _halve(w, n) for n, w in windows.items() if _has_data(w, n)}
        if out:
            region = {"time": slice(ti, ti + 1), "band": slice(None), "y": slice(r0, min(r0 + chunk, shape[0])),
                      "x": slice(c0, min(c0 + chunk, shape[1]))}
            _region_write_by_dims(out, url, dst, region, storage_options)
            written[k] = 1
    return {"written": written}


def timeseries_chunk_tasks(batch: dict[str, np.ndarray], *, url: str, target: str, names: list[str],
                           shape: tuple[int, int], edge: int, storage_options: Mapping[str, Any] | None
                           ) -> dict[str, np.ndarray]:
    """Chunk tasks of the time-series copy: task id -> (chunk row, chunk col); each reads every
    date and band of its window from the store and region-writes the copy's chunk."""
    _, nc = _grid(shape, edge)
    ds = open_windowed(url, storage_options)
    written = np.zeros(len(batch["id"]), np.int64)
    for k, task in enumerate(batch["id"]):
        r0, c0 = (int(task) // nc) * edge, (int(task) % nc) * edge
        window = {"y": slice(r0, min(r0 + edge, shape[0])), "x": slice(c0, min(c0 + edge, shape[1]))}
        out = {n: a for n in names if _has_data(a := read_window(ds[n], **window), n)}
        if out:
            region = {"time": slice(None), "band": slice(None), **window}
            _region_write_by_dims(out, target, None, region, storage_options)
            written[k] = 1
    return {"written": written}


def build_overviews(url: str, *, storage_options: Mapping[str, Any] | None = None,
                    min_px: int = MIN_OVERVIEW_PX, in_process_max: int = IN_PROCESS_MAX_TASKS) -> dict[str, Any]:
    """Write the overview levels of a finished store (replacing earlier ones) and return the
    root attributes that describe them (``multiscales``, ``zarr_conventions``); empty for a
    store too small for any level. The caller records them and consolidates the metadata
    (:func:`~lssr_ray.mapping.store.finalize_store`).

    Per level the driver writes the template (metadata only), then the level's chunks are
    computed by :func:`overview_chunk_tasks` on Ray (in this process for at most
    ``in_process_max`` tasks, :func:`~lssr_ray.mapping.stage_views.run_chunk_tasks`)."""
    base = open_windowed(url, storage_options)
    chunk = int(base[VALID_VAR].encoding["chunks"][-1])
    n_times = base.sizes.get("time", 1)
    factors = overview_factors((base.sizes["y"], base.sizes["x"]), min_px=min_px)
    first = _grid((-(-base.sizes["y"] // 2), -(-base.sizes["x"] // 2)), chunk)  # the largest level
    with chunk_task_ray(n_times * first[0] * first[1] if factors else 0, in_process_max=in_process_max):
        layout = _write_levels(url, base, factors, chunk, storage_options, in_process_max)
    if not layout:
        return {}
    return {"zarr_conventions": [{"uuid": MULTISCALES_UUID, "name": "multiscales",
                                  "spec_url": "https://github.com/zarr-conventions/multiscales"}],
            "multiscales": {"layout": layout, "resampling_method": "average",
                            "level_0": "the store's root group (full resolution)"}}


def _write_levels(url: str, base: Any, factors: list[int], chunk: int, storage_options: Mapping[str, Any] | None,
                  in_process_max: int) -> list[dict[str, Any]]:
    """Each level's template, then its chunk tasks, in order (each level from the one before);
    returns the multiscales layout entries."""
    from affine import Affine

    a, _, c, _, e, f0 = tuple(base.rio.transform())[:6]
    n_times = base.sizes.get("time", 1)
    layout, prev, prev_asset = [], base, None
    for f in factors:
        names = _variables(prev)
        h, w = -(-prev.sizes["y"] // 2), -(-prev.sizes["x"] // 2)
        level = _template(base, names, (h, w))
        level = level.assign_coords(x=c + a * f * (np.arange(w) + 0.5), y=f0 + e * f * (np.arange(h) + 0.5))
        level.x.attrs.update(base.x.attrs)
        level.y.attrs.update(base.y.attrs)
        level = level.rio.write_crs(base.rio.crs).rio.write_transform(Affine(a * f, 0, c, 0, e * f, f0))
        level = level.rio.write_grid_mapping("spatial_ref")
        level.attrs = {"overview_factor": f, "resampling": {n: RESAMPLING.get(n, "average") for n in names}}
        enc = {n: _encoding(base[n], _chunks(level[n], chunk)) for n in names}
        asset = f"{OVERVIEWS_GROUP}/{f}"
        _write(level, url, enc, storage_options, group=asset, consolidated=False, compute=False)
        finalize_store(url, storage_options=storage_options)  # the root's .zmetadata lists the new level
        nr, nc = _grid((h, w), chunk)
        run_chunk_tasks(overview_chunk_tasks, n_times * nr * nc, label=f"overview level {f}",
                        in_process_max=in_process_max,
                        kwargs={"url": str(url), "src": prev_asset, "dst": asset, "names": list(names),
                                "shape": (h, w), "chunk": chunk, "storage_options": storage_options})
        entry: dict[str, Any] = {"asset": asset, "transform": {"scale": [2.0, 2.0] if prev_asset else [float(f)] * 2,
                                                               "translation": [0.0, 0.0]},
                                 "resampling_method": "average", "proj:transform": [a * f, 0.0, c, 0.0, e * f, f0],
                                 "proj:shape": [h, w]}
        if prev_asset:
            entry["derived_from"] = prev_asset
        layout.append(entry)
        prev, prev_asset = open_windowed(url, storage_options, asset), asset
    return layout


def timeseries_url(url: str) -> str:
    """``<store without .zarr>_ts.zarr``: where :func:`write_timeseries_copy` writes."""
    return str(url).rstrip("/").removesuffix(".zarr") + "_ts.zarr"


def write_timeseries_copy(url: str, *, storage_options: Mapping[str, Any] | None = None,
                          edge: int = TIMESERIES_CHUNK, in_process_max: int = IN_PROCESS_MAX_TASKS) -> str:
    """Write the store's variables rechunked for per-pixel time series to :func:`timeseries_url`
    (replacing an earlier copy): chunks (time = all, band = all, y = ``edge``, x = ``edge``), the
    same encodings, coordinates, CRS and attributes; returns its URL. A location there holding
    anything but an earlier copy (or nothing) is refused with a :class:`StoreError`, never emptied.
    The driver writes the template; :func:`timeseries_chunk_tasks` copy the chunks (on Ray above
    ``in_process_max`` tasks)."""
    from lssr_ray.config import portable_ref
    from lssr_ray.mapping.output_target import STORE_FORMAT_VERSION, STORE_MARKER, output_state

    ds = open_windowed(url, storage_options)
    names = _variables(ds)
    shape = (ds.sizes["y"], ds.sizes["x"])
    enc = {n: _encoding(ds[n], _chunks(ds[n], edge, whole_time=True)) for n in names}
    out = _template(ds, names, shape).assign_coords(x=ds.x, y=ds.y, spatial_ref=ds.spatial_ref)
    out.attrs = {**ds.attrs, "timeseries_copy_of": portable_ref(url), "chunking": f"time=all, y={edge}, x={edge}",
                 STORE_MARKER: STORE_FORMAT_VERSION}  # ours: a later copy may replace it
    out.attrs.pop("multiscales", None)
    out.attrs.pop("zarr_conventions", None)
    target = timeseries_url(url)
    output_state(target, storage_options=storage_options)  # refuses (StoreError) anything not ours to replace
    _write(out, target, enc, storage_options, consolidated=True, compute=False)
    nr, nc = _grid(shape, edge)
    with chunk_task_ray(nr * nc, in_process_max=in_process_max):
        run_chunk_tasks(timeseries_chunk_tasks, nr * nc, label="time-series copy", in_process_max=in_process_max,
                        kwargs={"url": str(url), "target": target, "names": list(names), "shape": shape,
                                "edge": edge, "storage_options": storage_options})
    return target


__all__ = ["MIN_OVERVIEW_PX", "OVERVIEWS_GROUP", "RESAMPLING", "TIMESERIES_CHUNK", "build_overviews",
           "open_windowed", "overview_chunk_tasks", "overview_factors", "read_window", "timeseries_chunk_tasks",
           "timeseries_url", "write_timeseries_copy"]
