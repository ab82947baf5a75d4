"""The georeferenced Zarr output store: template, chunk-aligned writes, reading it back.

Layout (Zarr **v2**, so GDAL 3.10 / rasterio 1.4 / QGIS can open it, and xarray everywhere)::

    <store>.zarr/
      reflectance  int16 (time, band, y, x), CF-packed: value * 0.0001 = reflectance, valid_range
                   -100..16000 as HLS v2.0 (slightly negative and > 1 values are kept; only values
                   outside that range are clipped to it, int16 would wrap), _FillValue -9999
                   (NaN); chunks (1, 6, C, C), C = chip core
      valid        uint8 (time, y, x): 1 where all six bands are valid, 0 otherwise (and in
                   chunks never written); CF flag_values / flag_meanings; chunks (1, C, C)
      consistency  int16 (time, band, y, x), scale 0.0001, _FillValue -32768: PSF-degraded output
                   minus input (:mod:`lssr_ray.mapping.trust_layers`); always written by a run
      uncertainty  the same encoding: spread over test-time variants; only with --uncertainty
      crop_type    uint16 (y, x), _FillValue 0 (GDAL nodata), CF flag_values / flag_meanings
                   (:mod:`lssr_ray.mapping.classify_stage`)
      spatial_ref  CF grid mapping (crs_wkt + GeoTransform), referenced by ``grid_mapping``
      time, band, y, x   coordinates (pixel centres in metres of the UTM CRS); time = local
                   solar day of the acquisitions (:mod:`lssr_ray.data.mosaic`)
      sensor, granules   string coordinates along time: the HLS sensor(s) ("L30", "S30",
                   "L30+S30") and comma-separated granule ids fused into each time step
      overviews/<f>/     the same variables decimated by f = 2, 4, ... (:mod:`lssr_ray.mapping.views`)
      _partials/   per-chip stage-1 predictions while a run is resumable, removed once it is
                   complete (:mod:`lssr_ray.mapping.partials`)
      _manifest/   stage 1's work list (read blocks x dates still to compute), kept and removed
                   with ``_partials/`` (:mod:`lssr_ray.mapping.manifest`)
      _lock.json   the run lock while a run writes (:class:`~lssr_ray.mapping.lock.StoreLock`)

Opening it:

* xarray: :func:`open_store` (reflectance and trust layers as float32, ``crop_type`` as uint16
  with 0 = nodata, ``ds.rio.crs`` / ``ds.rio.transform()``). A plain ``xr.open_zarr(url,
  decode_coords="all")`` decodes the packed int16 to **float64**: Zarr keeps attributes as JSON,
  whose numbers are all doubles, so ``scale_factor`` cannot say float32 (CF asks the unpacked type
  to follow it; cf-conventions issue 422): ``.astype("float32")`` after opening is exact.
* GDAL / rasterio / QGIS: the subdataset ``ZARR:"/path/store.zarr":/reflectance``
  (a bare path shows no bands; :func:`gdal_path` builds the string). GDAL shows the 4-D
  variable as ``6 * n_times`` bands, time-major: band ``t * 6 + b + 1`` is time ``t``, band
  ``OUTPUT_BANDS[b]`` (each band's ``DIM_band_VALUE`` / ``DIM_time_VALUE`` metadata says which);
  GDAL applies scale 0.0001 and nodata -9999 from the CF attributes.

One variable rather than one per band keeps one object per chip per date (one PUT on S3).
Each output chunk is written by exactly one writer (the chunk's blend task), with a
chunk-aligned ``region=`` write in ``mode="r+"``; chunks are never shared, so concurrent
writers never touch the same object.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data.hls import VALID_RANGE
from lssr_ray.errors import StoreError
from lssr_ray.fileio import is_remote, settings_for, zarr_store
from lssr_ray.mapping.provenance import scrub_secrets

REFLECTANCE_VAR = "reflectance"
"""Name of the packed 10 m reflectance variable (time, band, y, x)."""
VALID_VAR = "valid"
"""Name of the uint8 validity mask (time, y, x)."""
SCALE_FACTOR = 0.0001
"""CF scale factor of the int16 reflectance (HLS convention)."""
FILL_VALUE = -9999
"""CF ``_FillValue`` of the int16 reflectance (HLS convention)."""
UNMASKED_VARS = ("valid", "crop_type")
"""Integer variables :func:`open_store` keeps as stored: 0 is their no-data class, not NaN."""
TIME_COORD_ATTRS = {
    "sensor": {"long_name": "HLS sensor(s) of the time step's mosaic (L30, S30 or L30+S30)"},
    "granules": {"long_name": "HLS granule ids fused into the time step's mosaic, comma-separated"},
}
"""CF attributes of the per-time provenance coordinates."""


# --------------------------------------------------------------------------- paths


def gdal_path(url: str, variable: str = REFLECTANCE_VAR) -> str:
    """The GDAL subdataset string for one store variable.

    ``/data/out.zarr`` -> ``ZARR:"/data/out.zarr":/reflectance``; ``s3://b/out.zarr`` ->
    ``ZARR:"/vsis3/b/out.zarr":/reflectance`` (GDAL reads the endpoint and keys from its
    ``AWS_*`` settings).
    """
    url = str(url).rstrip("/")
    if url.startswith("s3://"):
        path = "/vsis3/" + url[len("s3://") :]
    elif is_remote(url):
        raise StoreError(f"gdal_path: unsupported URL scheme in {url!r}; valid: local path, s3://")
    else:
        path = os.path.abspath(url.removeprefix("file://"))
    return f'ZARR:"{path}":/{variable}'


# --------------------------------------------------------------------------- template


@dataclass(frozen=True)
class StoreLayout:
    """Geometry of an existing store, read from its metadata."""

    shape: tuple[int, int]
    """(height, width) in output pixels."""
    chunk: int
    """Chunk edge in output pixels (= chip core)."""
    n_times: int
    """Length of the time axis."""
    bands: tuple[str, ...]
    """Band names in store order."""
    trust_layers: tuple[str, ...] = ()
    """Trust variables the store holds (:data:`lssr_ray.mapping.trust_layers.TRUST_VARS` order)."""


def _check_transform(transform: Sequence[float]) -> tuple[float, ...]:
    t = tuple(float(v) for v in tuple(transform)[:6])
    if len(t) != 6:
        raise StoreError(f"transform must have 6 affine terms (a, b, c, d, e, f), got {transform!r}")
    a, b, _, d, e, _ = t
    if b != 0 or d != 0 or a <= 0 or e >= 0:
        raise StoreError(f"transform must be north-up (b = d = 0, a > 0, e < 0) in metres, got {t}")
    return t


def create_store(
    url: str,
    *,
    crs: str,
    transform: Sequence[float],
    shape: tuple[int, int],
    chunk: int,
    times: Sequence[Any],
    bands: Sequence[str] = OUTPUT_BANDS,
    attrs: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    trust_layers: Sequence[str] = (),
    time_coords: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Write the store template (metadata and coordinates, no data chunks).

    Args:
        url: local path or ``s3://bucket/key.zarr``.
        crs: CRS of the output grid, e.g. ``"EPSG:32616"``.
        transform: affine ``(a, b, c, d, e, f)`` of the 10 m output grid (metres; top-left
            corner of the top-left pixel at ``(c, f)``; north-up).
        shape: (height, width) in output pixels.
        chunk: chunk edge in output pixels (the chip core, ``stride * scale``).
        times: acquisition dates (anything ``numpy.datetime64`` accepts), one per time slice.
        bands: band names (default :data:`lssr_ray.config.OUTPUT_BANDS`).
        attrs: global attributes, e.g. from :func:`~lssr_ray.mapping.provenance.provenance_attrs`;
            credentials are scrubbed (:func:`~lssr_ray.mapping.provenance.scrub_secrets`).
        storage_options: fsspec options for s3:// (``endpoint_url``, ``key``, ...).
        overwrite: replace an existing store of this project (deleting its ``_partials/`` too);
            otherwise an existing store is an error (a resumed run does not call this).
            Whatever ``overwrite`` says, a location holding anything that is not a store of this
            project (:func:`~lssr_ray.mapping.output_target.output_state`) is
            refused, never emptied.
        trust_layers: trust variables to add next to ``reflectance``, same grid and chunks
            (:func:`lssr_ray.mapping.trust_layers.trust_vars`).
        time_coords: string coordinates along ``time``, one value per time step, e.g.
            ``sensor`` and ``granules`` (:attr:`lssr_ray.mapping.plan.MapPlan.time_coords`).
    """
    import dask.array as da
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from affine import Affine

    t = _check_transform(transform)
    h, w = (int(shape[0]), int(shape[1]))
    if h < 1 or w < 1 or chunk < 1:
        raise StoreError(f"shape and chunk must be positive, got shape={shape}, chunk={chunk}")
    times_arr = np.asarray(list(times), dtype="datetime64[ns]")
    if times_arr.size < 1:
        raise StoreError("times must list at least one acquisition date")
    bands = tuple(str(b) for b in bands)
    from lssr_ray.mapping.output_target import (
        OURS,
        STORE_FORMAT_VERSION,
        STORE_MARKER,
        output_state,
    )

    if output_state(url, storage_options=storage_options) == OURS and not overwrite:
        raise StoreError(f"store {url} already exists; pass overwrite=True or resume into it")

    a, _, c, _, e, f = t
    x = c + a * (np.arange(w) + 0.5)
    y = f + e * (np.arange(h) + 0.5)
    nt, nb = times_arr.size, len(bands)
    # one dask chunk per variable: with compute=False nothing is written, and xarray only needs
    # dask chunks that are whole multiples of the Zarr chunks (the encoding below sets those);
    # a dask chunk per Zarr chunk made a graph of ~10^5 tasks per variable for a state (1 GB driver)
    refl = da.full((nt, nb, h, w), np.nan, dtype="float32", chunks=-1)
    valid = da.zeros((nt, h, w), dtype="uint8", chunks=-1)
    ds = xr.Dataset({REFLECTANCE_VAR: (("time", "band", "y", "x"), refl), VALID_VAR: (("time", "y", "x"), valid)},
                    coords={"time": times_arr, "band": list(bands), "y": y, "x": x})
    for name, values in (time_coords or {}).items():
        if len(values) != nt:
            raise StoreError(f"time coordinate {name!r} has {len(values)} values for {nt} time steps")
        ds = ds.assign_coords({name: ("time", np.asarray([str(v) for v in values], dtype=str),
                                      TIME_COORD_ATTRS.get(name, {}))})
    from lssr_ray.mapping.trust_layers import TRUST_VARS, trust_attrs, trust_encoding

    unknown = sorted(set(trust_layers) - set(TRUST_VARS))
    if unknown:
        raise StoreError(f"unknown trust layers {unknown}; valid: {list(TRUST_VARS)}")
    trust = [n for n in TRUST_VARS if n in set(trust_layers)]
    for name in trust:
        ds[name] = (("time", "band", "y", "x"), refl)
        ds[name].attrs.update(trust_attrs(name))
    ds = ds.rio.write_crs(crs).rio.write_transform(Affine(*t)).rio.write_grid_mapping("spatial_ref")
    ds[REFLECTANCE_VAR].attrs.update(long_name="surface reflectance (10 m, super-resolved)", units="1",
                                     valid_range=list(VALID_RANGE))  # packed units, as HLS v2.0
    ds[VALID_VAR].attrs.update(
        long_name="1 where all bands are valid", flag_values=[0, 1], flag_meanings="invalid valid"
    )
    ds.x.attrs.update(units="m", standard_name="projection_x_coordinate", axis="X")
    ds.y.attrs.update(units="m", standard_name="projection_y_coordinate", axis="Y")
    ds.attrs.update(scrub_secrets(attrs or {}, storage_options))
    ds.attrs["chunk_size_px"] = int(chunk)
    ds.attrs[STORE_MARKER] = STORE_FORMAT_VERSION  # lets a later run tell our store from foreign files
    encoding = {
        REFLECTANCE_VAR: {
            "dtype": "int16",
            "scale_factor": np.float32(SCALE_FACTOR),
            "add_offset": np.float32(0.0),
            "_FillValue": FILL_VALUE,
            "chunks": (1, nb, chunk, chunk),
            "grid_mapping": "spatial_ref",
        },
        # no _FillValue: 0 (zarr's default for never-written chunks) already means "invalid"
        VALID_VAR: {"_FillValue": None, "chunks": (1, chunk, chunk), "grid_mapping": "spatial_ref"},
        **{name: trust_encoding((1, nb, chunk, chunk)) for name in trust},
    }
    ds.to_zarr(
        str(url),
        mode="w",
        compute=False,
        zarr_format=2,
        consolidated=True,
        encoding=encoding,
        storage_options=settings_for(url, storage_options) or None,
    )


def read_layout(url: str, *, storage_options: Mapping[str, Any] | None = None) -> StoreLayout:
    """Shape, chunk size, time count and band names of an existing store."""
    import zarr

    try:
        group = zarr.open_group(zarr_store(url, storage_options), mode="r", zarr_format=2)
        arr = group[REFLECTANCE_VAR]
        bands = tuple(str(b) for b in group["band"][:])
    except (FileNotFoundError, KeyError) as exc:
        raise StoreError(f"{url} is not an lssr-ray store (no {REFLECTANCE_VAR!r}); create it with create_store") from exc
    from lssr_ray.mapping.trust_layers import TRUST_VARS

    nt, _, h, w = arr.shape
    names = set(group.array_keys())
    return StoreLayout(shape=(h, w), chunk=int(arr.chunks[2]), n_times=nt, bands=bands,
                       trust_layers=tuple(n for n in TRUST_VARS if n in names))


def write_chunk(
    url: str,
    reflectance: np.ndarray,
    *,
    row_off: int,
    col_off: int,
    time_index: int = 0,
    valid: np.ndarray | None = None,
    layout: StoreLayout | None = None,
    layers: Mapping[str, np.ndarray] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write one output chunk with a chunk-aligned region write (``mode="r+"``).

    Args:
        url: the store.
        reflectance: float (bands, H, W) reflectance, NaN = nodata; values outside the HLS
            valid range (-0.01 .. 1.6) are clipped to it (int16 would wrap); H = W = chunk,
            except at the grid's bottom/right edge where the chunk may be cut by the grid.
        row_off, col_off: offsets in output pixels of the chunk's top-left pixel; multiples of
            the chunk size.
        time_index: index on the store's time axis.
        valid: uint8/bool (H, W); default: all bands finite.
        layout: the store layout if the caller already read it (saves a metadata read).
        layers: trust layers of the chunk by name, each of ``reflectance``'s shape, written in the
            same region write; each must be one of the store's ``trust_layers`` (a layer the
            store holds but not given here stays fill / NaN in this chunk).
    """
    import xarray as xr

    lay = layout or read_layout(url, storage_options=storage_options)
    refl = np.asarray(reflectance, dtype="float32")
    if refl.ndim != 3 or refl.shape[0] != len(lay.bands):
        raise StoreError(f"reflectance must be (bands={len(lay.bands)}, H, W), got shape {refl.shape}")
    _, hh, ww = refl.shape
    c, (h, w) = lay.chunk, lay.shape
    if row_off % c or col_off % c or not (0 <= row_off < h and 0 <= col_off < w):
        raise StoreError(f"region ({row_off}, {col_off}) is not a chunk origin: offsets must be multiples of "
                         f"the chunk size {c} inside the grid {lay.shape}")
    want = (min(c, h - row_off), min(c, w - col_off))
    if (hh, ww) != want:
        raise StoreError(f"chunk at ({row_off}, {col_off}) must be {want} pixels, got {(hh, ww)}")
    if not 0 <= time_index < lay.n_times:
        raise StoreError(f"time_index {time_index} outside the store's {lay.n_times} dates")
    if valid is None:
        valid = np.isfinite(refl).all(axis=0)
    valid = np.asarray(valid).astype("uint8")
    # out-of-range values would wrap in int16: clip to HLS's valid range only, so the sign of a
    # slightly negative prediction survives (a clip at 0 turned them into exact zeros)
    lo, hi = (v * SCALE_FACTOR for v in VALID_RANGE)
    refl = np.where(np.isfinite(refl), np.clip(refl, lo, hi), np.nan).astype("float32")
    from lssr_ray.mapping.trust_layers import clip_trust

    layers = dict(layers or {})
    extra = sorted(set(layers) - set(lay.trust_layers))
    if extra:
        raise StoreError(f"store {url} has no trust layer(s) {extra}; it holds {list(lay.trust_layers)}")
    for name, arr in layers.items():
        if np.shape(arr) != refl.shape:
            raise StoreError(f"trust layer {name!r} must have reflectance's shape {refl.shape}, got {np.shape(arr)}")
    sub = xr.Dataset({
        REFLECTANCE_VAR: (("time", "band", "y", "x"), refl[None]),
        VALID_VAR: (("time", "y", "x"), valid[None]),
        **{name: (("time", "band", "y", "x"), clip_trust(arr)[None]) for name, arr in layers.items()},
    })
    region = {"time": slice(time_index, time_index + 1), "band": slice(0, len(lay.bands)),
              "y": slice(row_off, row_off + hh), "x": slice(col_off, col_off + ww)}
    region_write(sub, url, region, storage_options)


def region_write(
    sub: Any, url: str, region: dict[str, slice], storage_options: Mapping[str, Any] | None,
    group: str | None = None,
) -> None:
    """Write ``sub`` into the existing store at ``region`` (index slices per dimension): the one
    way any stage (chunk blends, the crop-type map, overview levels: ``group``) puts values into
    a created store."""
    with warnings.catch_warnings():  # _partials/, _manifest/, _lock.json are ours, not Zarr nodes
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        sub.to_zarr(
            str(url),
            mode="r+",
            group=group,
            region=region,
            zarr_format=2,
            consolidated=False,
            storage_options=settings_for(url, storage_options) or None,
        )


def finalize_store(url: str, *, attrs: Mapping[str, Any] | None = None,
                   storage_options: Mapping[str, Any] | None = None) -> None:
    """Add global attributes (e.g. chip counts) and consolidate the metadata (``.zmetadata``)."""
    import zarr

    store = zarr_store(url, storage_options)
    with warnings.catch_warnings():
        # _partials/ and _lock.json are ours, not Zarr nodes; zarr warns and skips them
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        if attrs:
            group = zarr.open_group(store, mode="r+", zarr_format=2)
            group.attrs.update(scrub_secrets(attrs, storage_options))
        zarr.consolidate_metadata(store, zarr_format=2)


def open_store(url: str, *, storage_options: Mapping[str, Any] | None = None, group: str | None = None) -> Any:
    """Open the store as an :class:`xarray.Dataset`: the packed int16 variables (reflectance, trust
    layers, also in overviews) decoded to float32 with NaN fill, ``valid`` and ``crop_type`` as
    stored (uint8 / uint16, 0 = invalid / nodata); ``ds.rio.crs`` and ``ds.rio.transform()`` set
    from ``spatial_ref``. ``group``: a group inside the store, e.g. an overview level."""
    import rioxarray  # noqa: F401
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        ds = xr.open_zarr(str(url), group=group, decode_coords="all", mask_and_scale=dict.fromkeys(UNMASKED_VARS, False),
                          storage_options=settings_for(url, storage_options) or None)
    for name, var in list(ds.data_vars.items()):
        if "scale_factor" in var.encoding and var.dtype != np.float32:
            # float64 only because JSON attributes are doubles; float32 holds every int16 * 1e-4
            ds[name] = var.astype(np.float32)
            ds[name].encoding = dict(var.encoding)
    return ds


__all__ = ["FILL_VALUE", "REFLECTANCE_VAR", "SCALE_FACTOR", "TIME_COORD_ATTRS", "UNMASKED_VARS", "VALID_VAR",
           "StoreLayout", "create_store", "finalize_store", "gdal_path", "open_store", "read_layout",
           "region_write", "write_chunk"]
