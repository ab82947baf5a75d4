"""Raster reads for local paths and ``s3://`` URIs, onto a target grid, only the window needed.

GDAL settings for S3 come from the environment (``AWS_ENDPOINT_URL`` -> ``AWS_S3_ENDPOINT``,
``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING=FALSE``; explicit ``AWS_S3_ENDPOINT`` etc. win) and are
carried explicitly into every read with :class:`rasterio.Env`, so reads in Ray workers and
threads see the same settings. HTTP timeouts and retries are short so that an unreachable
endpoint fails in seconds with :class:`~lssr_ray.errors.StorageUnreachableError`.

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
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.errors import CRSMismatchError, MissingDataError, StorageUnreachableError

_GDAL_DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no bucket listing per open
    "GDAL_HTTP_TIMEOUT": "10",  # seconds; an unreachable endpoint must fail fast
    "GDAL_HTTP_CONNECTTIMEOUT": "3",
    "GDAL_HTTP_MAX_RETRY": "0",
}


def gdal_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL config options for S3 and HTTP built from ``env`` (default: ``os.environ``).

    ``AWS_ENDPOINT_URL=http://host:port`` (boto3/s3fs convention) becomes
    ``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE``.
    """
    env = os.environ if env is None else env
    opts = dict(_GDAL_DEFAULTS)
    url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if url:
        u = urlparse(url if "://" in url else f"http://{url}")
        opts["AWS_S3_ENDPOINT"] = u.netloc
        opts["AWS_HTTPS"] = "YES" if u.scheme == "https" else "NO"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
    for key in (
        "AWS_S3_ENDPOINT",
        "AWS_HTTPS",
        "AWS_VIRTUAL_HOSTING",
        "AWS_REGION",
        "AWS_NO_SIGN_REQUEST",
        "GDAL_HTTP_TIMEOUT",
        "GDAL_HTTP_CONNECTTIMEOUT",
        "GDAL_HTTP_MAX_RETRY",
    ):
        if env.get(key):
            opts[key] = env[key]
    return opts


def _aws_session(env: Mapping[str, str] | None = None) -> Any:
    """rasterio AWS session with the credentials from ``env`` (rasterio refuses them as options)."""
    from rasterio.session import AWSSession

    env = os.environ if env is None else env
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return AWSSession(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            endpoint_url=gdal_options(env).get("AWS_S3_ENDPOINT"),
        )
    return None


def gdal_env(env: Mapping[str, str] | None = None) -> Any:
    """A :class:`rasterio.Env` carrying :func:`gdal_options` and the AWS credentials explicitly."""
    import rasterio

    session = _aws_session(env)
    opts = gdal_options(env)
    return rasterio.Env(session=session, **opts) if session is not None else rasterio.Env(**opts)


def s3_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The S3 endpoint GDAL will use, as ``scheme://host:port`` (AWS default when none is set)."""
    o = gdal_options(env)
    host = o.get("AWS_S3_ENDPOINT", "s3.amazonaws.com")
    return f"{'https' if o.get('AWS_HTTPS', 'YES').upper() != 'NO' else 'http'}://{host}"


def check_endpoint(endpoint: str | None = None, *, timeout: float = 2.0) -> None:
    """Raise :class:`StorageUnreachableError` if nothing accepts TCP connections at ``endpoint``."""
    endpoint = endpoint or s3_endpoint()
    u = urlparse(endpoint)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise StorageUnreachableError(
            f"S3 endpoint {endpoint} is unreachable ({exc.strerror or exc}); start it "
            "(e.g. `make s3-up`) or set AWS_ENDPOINT_URL to a running endpoint"
        ) from exc


@contextlib.contextmanager
def open_raster(href: str) -> Iterator[Any]:
    """Open a local path or ``s3://`` URI with the GDAL env carried explicitly.

    Raises :class:`MissingDataError` (missing/corrupt file, message has GDAL's reason) or
    :class:`StorageUnreachableError` (``s3://`` endpoint down, message names it).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    is_s3 = str(href).startswith("s3://")
    if not is_s3 and "://" not in str(href) and not os.path.exists(href):
        raise MissingDataError(f"raster not found: {href}")
    with gdal_env():
        try:
            src = rasterio.open(href)
        except RasterioIOError as exc:
            if is_s3:
                check_endpoint()
            raise MissingDataError(f"cannot open raster {href} (missing or corrupt): {exc}") from exc
        try:
            yield src
        finally:
            src.close()


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
            if str(href).startswith("s3://"):
                check_endpoint()  # the endpoint may have gone away after the open
            raise MissingDataError(f"cannot read {href} (corrupt or truncated): {exc}") from exc
    return arr.astype(out_dtype, copy=False)


def hls_band_ids(collection: str) -> dict[str, str]:
    """OUTPUT_BANDS common name -> HLS band id for an L30/S30 collection (``"HLSL30"``, ``"L30"``...)."""
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


def read_lowres(granule: Any, grid: Any, *, window: tuple[int, int, int, int], mask_band: str = "Fmask") -> LowRes:
    """Read the six bands + Fmask of an HLS granule on ``window`` of ``grid``'s 30 m input grid.

    One request per band for the whole window: read a block covering a group of chips once,
    then :meth:`LowRes.cut` each chip. The granule may be in another UTM zone: it is warped
    (nearest) onto the grid. Raises :class:`MissingDataError` naming the granule, band and the
    bands present when an asset is missing.
    """
    from lssr_ray.data import hls, masks

    ids = hls_band_ids(granule.collection)
    hrefs = [_asset(granule, b, ids[b]) for b in OUTPUT_BANDS]
    mhref = _asset(granule, mask_band.lower(), mask_band)
    t = grid.input_transform @ Affine.translation(window[1], window[0])
    shape = (window[2], window[3])

    def band(name: str, bid: str, href: str, fill: int, dtype: str) -> np.ndarray:
        try:
            return read_raster(href, grid.crs, transform=t, shape=shape, fill=fill, dtype=dtype)
        except MissingDataError as exc:
            raise MissingDataError(
                f"granule {granule.id}: band {name!r} ({bid}) cannot be read: {exc}; "
                f"bands present: {sorted(dict(granule.assets))}"
            ) from exc

    raw = np.concatenate([band(b, ids[b], h, hls.NODATA, "int16") for b, h in zip(OUTPUT_BANDS, hrefs)])
    lr = hls.to_reflectance(raw)
    fm = band("mask", mask_band, mhref, hls.FMASK_FILL, "uint8")[0]
    observed = (fm != hls.FMASK_FILL) & np.isfinite(lr).all(axis=0)
    clear = masks.clear_from_fmask(fm) & observed
    lr[:, ~clear] = np.nan
    return LowRes(lr, clear, observed, acquisition_month(granule.datetime), str(granule.id), tuple(window))


__all__ = [
    "LowRes",
    "acquisition_month",
    "check_endpoint",
    "gdal_env",
    "gdal_options",
    "hls_band_ids",
    "open_raster",
    "read_lowres",
    "read_raster",
    "s3_endpoint",
]
