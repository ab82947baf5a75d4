"""Raster reads for local paths and ``s3://`` URIs, onto a target grid, only the window needed.

GDAL settings for S3 and https (endpoint, per-URL credentials, short HTTP timeouts, retries with
backoff) come from :func:`lssr_ray.fileio.gdal_env` for each href and are carried explicitly into
every read, so reads in Ray workers and threads see the same settings and an unreachable endpoint
fails in seconds with :class:`~lssr_ray.errors.StorageUnreachableError`.

Failed reads are told apart (:func:`read_error`): 401/403/expired credentials ->
:class:`~lssr_ray.errors.AuthenticationError` (stops the job, names the fix); 404 ->
:class:`~lssr_ray.errors.MissingObjectError`; 429/5xx/timeouts after GDAL's retries ->
:class:`~lssr_ray.errors.TransientReadError`; anything else -> ``MissingDataError`` (corrupt).

Reprojection rule: a source on the target CRS whose pixels sit on the target lattice at the same
resolution is read with a plain windowed read (bit-exact); anything else (other CRS, other
resolution, shifted lattice) is warped with :class:`rasterio.vrt.WarpedVRT` using the requested
resampling. A source with no CRS raises :class:`~lssr_ray.errors.CRSMismatchError`.

HLS granules (:func:`read_lowres`): int16 * 0.0001 -> float32 reflectance, -9999 -> NaN, the
Fmask band -> clear mask (:func:`lssr_ray.data.masks.clear_from_fmask`), not-clear pixels NaN in
``lr``, bands in ``OUTPUT_BANDS`` order, month from the acquisition date.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.errors import (
    AuthenticationError,
    CRSMismatchError,
    MissingDataError,
    MissingObjectError,
    TransientReadError,
)
from lssr_ray.fileio import check_endpoint, gdal_endpoint, gdal_env, is_remote, is_s3

# GDAL's wording for /vsicurl/ (``HTTP response code: 403``) and /vsis3/ (the S3 error code)
_AUTH = re.compile(r"response code: 40[13]\b|Access ?Denied|InvalidAccessKeyId|Access Key Id you provided|"
                   r"SignatureDoesNotMatch|signature we calculated|ExpiredToken|token .*(expired|invalid)|"
                   r"InvalidToken|TokenRefreshRequired|Permission denied", re.IGNORECASE)
_MISSING = re.compile(r"response code: 404\b|NoSuchKey|NoSuchBucket|specified (key|bucket) does not exist|"
                      r"does not exist in the file system|No such file", re.IGNORECASE)
_TRANSIENT = re.compile(r"response code: (429|5\d\d)\b|timed out|timeout|Connection reset|SlowDown|"
                        r"ServiceUnavailable|InternalError|RequestTimeout", re.IGNORECASE)


def read_error(href: str, exc: BaseException, doing: str = "read") -> MissingDataError | AuthenticationError:
    """The project error for a failed GDAL open/read of ``href`` (see the module docstring)."""
    from lssr_ray.credentials import AUTH_FIX, archive_prefix

    text = " ".join(str(exc).split())
    remote = is_remote(href)  # a local file's "Permission denied" is not a credentials problem
    if remote and _AUTH.search(text):
        fix = (AUTH_FIX + " (the archive's S3 keys are fetched and refreshed for you; direct S3 reads work only "
               "in AWS us-west-2)") if archive_prefix(href) else (
               "check this bucket's credentials (LSSR_STORAGE_OPTIONS prefix settings or AWS_* variables) "
               "and its read permissions")
        return AuthenticationError(f"authentication failed: cannot {doing} {href} ({text}); {fix}")
    if _MISSING.search(text):
        return MissingObjectError(f"cannot {doing} {href}: the object does not exist ({text})")
    if remote and _TRANSIENT.search(text):
        return TransientReadError(f"cannot {doing} {href} after retries, a transient error ({text}); "
                                  "rerun with --resume to retry")
    return MissingDataError(f"cannot {doing} raster {href} (corrupt or truncated): {text}")

REFLECTANCE_RESAMPLING = "bilinear"
"""Kernel warping HLS reflectance from another UTM zone onto the grid. Bilinear, not cubic:
at the same 30 m resolution its 2 x 2 footprint mixes the fewest neighbours (less cloud-edge
and nodata-edge contamination than cubic's 4 x 4) and never overshoots the range of its inputs
(cubic rings at field and water edges, making reflectance the sensor never measured)."""


@contextlib.contextmanager
def open_raster(href: str) -> Iterator[Any]:
    """Open a local path or ``s3://`` URI with the GDAL env carried explicitly.

    Raises :class:`StorageUnreachableError` (``s3://`` endpoint down, message names it) or the
    error :func:`read_error` tells apart (message has GDAL's reason).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    if not is_remote(href) and not os.path.exists(href):
        raise MissingObjectError(f"raster not found: {href}")
    with gdal_env(href):
        try:
            src = rasterio.open(href)
        except RasterioIOError as exc:
            if is_s3(href):
                check_endpoint(gdal_endpoint(href))
            raise read_error(href, exc, "open") from exc
        try:
            yield src
        finally:
            src.close()


@dataclass(frozen=True)
class RasterHeader:
    """What a raster's header says about its grid and values (no pixels read)."""

    crs: str
    """``"EPSG:xxxx"`` (or WKT when the CRS has no EPSG code)."""
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    """(rows, cols)."""
    dtype: str
    nodata: float | None
    """Band 1 nodata: GDAL's nodata, else a ``_FillValue`` tag, else None."""
    scale: float | None
    """Band 1 scale: GDAL's scale when not 1, else a ``scale_factor`` tag, else None."""
    offset: float | None
    """Band 1 offset: GDAL's offset when not 0, else an ``add_offset`` tag, else None."""


def _tag_float(tags: dict, *names: str) -> float | None:
    for name in names:
        if name in tags:
            try:
                return float(tags[name])
            except (TypeError, ValueError):
                return None
    return None


@functools.lru_cache(maxsize=4096)
def raster_header(href: str) -> RasterHeader:
    """The header of ``href`` (local or ``s3://``), read once per process and href: grid, dtype,
    nodata, scale and offset of band 1. HLS COGs carry ``scale_factor``/``_FillValue`` tags."""
    with open_raster(href) as src:
        if src.crs is None:
            raise CRSMismatchError(f"{href} has no CRS; cannot place it on a grid (georeference it first)")
        tags = src.tags(1)
        epsg = src.crs.to_epsg()
        scale = src.scales[0] if src.scales and src.scales[0] not in (None, 1.0) else None
        offset = src.offsets[0] if src.offsets and src.offsets[0] not in (None, 0.0) else None
        return RasterHeader(
            crs=f"EPSG:{epsg}" if epsg else src.crs.to_wkt(), transform=tuple(src.transform)[:6],
            shape=(src.height, src.width), dtype=src.dtypes[0],
            nodata=src.nodata if src.nodata is not None else _tag_float(tags, "_FillValue"),
            scale=scale if scale is not None else _tag_float(tags, "scale_factor"),
            offset=offset if offset is not None else _tag_float(tags, "add_offset"),
        )


def _aligned(src: Any, crs: Any, transform: Affine) -> bool:
    st = src.transform
    if src.crs != crs or st.b or st.d or transform.b or transform.d:
        return False
    if not (np.isclose(st.a, transform.a) and np.isclose(st.e, transform.e)):
        return False
    dx = (transform.c - st.c) / st.a
    dy = (transform.f - st.f) / st.e
    return bool(np.isclose(dx, round(dx), atol=1e-6) and np.isclose(dy, round(dy), atol=1e-6))


def read_raster(
    href: str,
    crs: str,
    *,
    transform: Affine,
    shape: tuple[int, int],
    bands: Sequence[int] = (1,),
    resampling: str = "nearest",
    dtype: str | None = None,
    fill: float | None = None,
) -> np.ndarray:
    """Read ``bands`` of ``href`` onto the grid (``crs``, ``transform``, ``shape``) -> (n, h, w).

    Only the window the grid needs is read. Outside the source, pixels get ``fill`` (default:
    the source nodata, else 0). ``resampling`` is a :class:`rasterio.enums.Resampling` name.
    """
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    dst_crs = CRS.from_user_input(crs)
    h, w = shape
    with open_raster(href) as src:
        if src.crs is None:
            raise CRSMismatchError(f"{href} has no CRS; cannot place it on the {crs} grid (georeference it first)")
        nodata = src.nodata
        fillv = fill if fill is not None else (nodata if nodata is not None else 0)
        out_dtype = dtype or src.dtypes[0]
        try:
            if _aligned(src, dst_crs, transform):
                col = round((transform.c - src.transform.c) / src.transform.a)
                row = round((transform.f - src.transform.f) / src.transform.e)
                arr = src.read(list(bands), window=Window(col, row, w, h), boundless=True, fill_value=fillv)
            else:
                rs = Resampling[resampling]
                with WarpedVRT(
                    src, crs=dst_crs, transform=transform, width=w, height=h, resampling=rs,
                    src_nodata=nodata, nodata=fillv if nodata is not None else None,
                ) as vrt:
                    arr = vrt.read(list(bands))
                    if nodata is None:
                        # without a source nodata, pixels outside the source read as 0: mark them
                        valid = vrt.dataset_mask() > 0
                        arr = np.where(valid[None], arr, np.asarray(fillv).astype(arr.dtype))
        except RasterioIOError as exc:
            if is_s3(href):
                check_endpoint(gdal_endpoint(href))  # the endpoint may have gone away after the open
            raise read_error(href, exc) from exc
    return arr.astype(out_dtype, copy=False)


def hls_band_ids(collection: str) -> dict[str, str]:
    """OUTPUT_BANDS common name -> HLS band id for an L30/S30 collection (``"HLSL30_2.0"``, ``"HLSL30"``, ``"L30"``...)."""
    from lssr_ray.data import hls

    c = collection.upper()
    product = "S30" if "S30" in c else "L30" if "L30" in c else None
    if product is None:
        raise MissingDataError(f"unknown collection {collection!r}; expected an HLS collection with one of {hls.PRODUCTS}")
    return {b: hls.band_id(product, b) for b in OUTPUT_BANDS}


def acquisition_month(when: Any) -> int:
    """Month 1..12 of an acquisition date (``datetime``, ``date`` or ISO-8601 string)."""
    if isinstance(when, str):
        when = _dt.datetime.fromisoformat(when)  # Python 3.11 accepts a trailing Z
    return int(when.month)


def _asset(granule: Any, band: str, band_id: str) -> str:
    assets = dict(granule.assets)
    href = assets.get(band_id, assets.get(band))
    if href is None:
        raise MissingDataError(
            f"granule {granule.id}: band {band!r} ({band_id}) is missing; bands present: {sorted(assets)}"
        )
    return href if not hasattr(href, "href") else href.href


@dataclass(frozen=True)
class LowRes:
    """The 30 m inputs of one granule on a window of the input grid."""

    lr: np.ndarray
    """float32 (6, h, w) reflectance in OUTPUT_BANDS order; NaN = nodata or not clear."""
    clear: np.ndarray
    """bool (h, w): True where Fmask is clear and all six bands have data."""
    observed: np.ndarray
    """bool (h, w): True where the granule has data (Fmask not fill, all bands valid), cloudy or not."""
    month: int
    """Acquisition month 1..12."""
    granule_id: str
    """Granule id the data came from."""
    window: tuple[int, int, int, int]
    """(row_off, col_off, h, w) of this array on the input grid."""

    @property
    def clear_fraction(self) -> float:
        """Fraction of clear pixels in the window."""
        return float(self.clear.mean()) if self.clear.size else 0.0

    def cut(self, window: tuple[int, int, int, int]) -> LowRes:
        """Sub-window (input-grid pixels, inside this one) without another read."""
        r = window[0] - self.window[0]
        c = window[1] - self.window[1]
        h, w = window[2], window[3]
        if r < 0 or c < 0 or r + h > self.clear.shape[0] or c + w > self.clear.shape[1]:
            raise ValueError(f"window {window} is not inside the block window {self.window}")
        sl = (slice(r, r + h), slice(c, c + w))
        return LowRes(self.lr[:, sl[0], sl[1]], self.clear[sl], self.observed[sl], self.month,
                      self.granule_id, tuple(window))


def _nodata(href: str) -> int:
    from lssr_ray.data import hls

    nodata = raster_header(href).nodata
    return hls.NODATA if nodata is None or not np.isfinite(nodata) else int(nodata)


def _scaling(href: str) -> dict[str, float]:
    from lssr_ray.data import hls

    hdr = raster_header(href)
    return {"scale": hls.SCALE if hdr.scale is None else hdr.scale,
            "offset": 0.0 if hdr.offset is None else hdr.offset, "nodata": _nodata(href)}


def read_lowres(granule: Any, grid: Any, *, window: tuple[int, int, int, int], mask_band: str = "Fmask") -> LowRes:
    """Read the six bands + Fmask of an HLS granule on ``window`` of ``grid``'s 30 m input grid.

    One request per band for the whole window: read a block covering a group of chips once,
    then :meth:`LowRes.cut` each chip. A granule on the grid's lattice is a plain windowed read
    (bit-exact); one in another UTM zone is warped onto the grid, reflectance with
    :data:`REFLECTANCE_RESAMPLING` (source nodata -9999 excluded from the kernel, so it never
    smears into valid pixels), Fmask with nearest. Raises :class:`MissingDataError` naming the granule, band and the
    bands present when an asset is missing.
    """
    from lssr_ray.data import hls, masks

    ids = hls_band_ids(granule.collection)
    hrefs = [_asset(granule, b, ids[b]) for b in OUTPUT_BANDS]
    mhref = _asset(granule, mask_band.lower(), mask_band)
    t = grid.input_transform @ Affine.translation(window[1], window[0])
    shape = (window[2], window[3])

    def band(name: str, bid: str, href: str, fill: int | None, dtype: str, resampling: str) -> np.ndarray:
        try:  # fill None: the file's own nodata (header, cached), so it masks like the file's
            fill = _nodata(href) if fill is None else fill
            return read_raster(href, grid.crs, transform=t, shape=shape, fill=fill, dtype=dtype,
                               resampling=resampling)
        except MissingDataError as exc:  # same class (the skip reason), granule and band named
            raise type(exc)(
                f"granule {granule.id}: band {name!r} ({bid}) cannot be read: {exc}; "
                f"bands present: {sorted(dict(granule.assets))}"
            ) from exc

    # scale and nodata from each band file's header where it has them (HLS defaults otherwise)
    lr = np.concatenate([hls.to_reflectance(band(b, ids[b], h, None, "int16", REFLECTANCE_RESAMPLING), **_scaling(h))
                         for b, h in zip(OUTPUT_BANDS, hrefs)])
    fm = band("mask", mask_band, mhref, hls.FMASK_FILL, "uint8", "nearest")[0]  # bit flags: never blended
    observed = (fm != hls.FMASK_FILL) & np.isfinite(lr).all(axis=0)
    clear = masks.clear_from_fmask(fm) & observed
    lr[:, ~clear] = np.nan
    return LowRes(lr, clear, observed, acquisition_month(granule.datetime), str(granule.id), tuple(window))


__all__ = [
    "REFLECTANCE_RESAMPLING",
    "LowRes",
    "RasterHeader",
    "acquisition_month",
    "hls_band_ids",
    "open_raster",
    "raster_header",
    "read_error",
    "read_lowres",
    "read_raster",
]
