"""Aux layers (DEM, land cover, Sentinel-1 SAR) warped onto a chip's 10 m grid.

Resampling: bilinear for continuous layers (DEM metres, SAR sigma0 dB), nearest for land-cover
classes when the source is as fine or coarser than the target, mode when it is finer (so a
class never becomes an average of codes). A layer in another CRS is reprojected with
:func:`rasterio.warp.reproject`. A missing layer gives NaN (DEM/SAR) or 0 (land cover) and
``present`` = 0 for that layer, as the batch contract in docs/ARCHITECTURE.md says.

A layer given as several tiles (Copernicus GLO-30 is cut in 1-degree tiles, ESA WorldCover in
3-degree tiles, Sentinel-1 in frames along the pass) is a mosaic: each tile is warped onto the
grid and fills the pixels no earlier tile filled. Value conventions of public sources are
converted here, after warping: land-cover codes through a lookup table to class indices
(``landcover_lut``; unknown codes -> 0) and Sentinel-1 linear backscatter to dB
(``sar_linear``: 10 log10, values <= 0 -> NaN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from lssr_ray.data.readers import open_raster
from lssr_ray.errors import ConfigError, MissingDataError

AUX_KINDS = ("dem", "landcover", "sar")
"""Aux layer names, in the order of the ``present`` vector."""
SAR_MAX_GAP_DAYS = 16.0
"""A Sentinel-1 scene is used for a chip only within this many days of its Landsat/HLS date."""
SAR_PASS_S = 600.0
"""Sentinel-1 frames within this many seconds of the chosen scene belong to the same pass
(consecutive frames are ~25 s apart) and are mosaicked with it."""
WORLDCOVER_CSV = Path(__file__).with_name("worldcover_classes.csv")
"""ESA WorldCover code -> model class index. WorldCover's 11 classes take indices 5..15, after
the bundled archive's WorldCereal LC codes (0..4 in ``landcover_classes.csv``): no class is
merged with a WorldCereal code because that legend is not available (see that file), so
neither source's meaning is guessed. All indices stay below the model's 32-class embedding."""
LANDCOVER_CODES = ("index", "esa-worldcover")
"""How a land-cover source encodes classes: class indices already (the bundled archive) or ESA
WorldCover codes (mapped by ``lssr_ray/data/worldcover_classes.csv``)."""
SAR_UNITS = ("dB", "linear")
"""How a Sentinel-1 source stores backscatter: dB (the bundled archive) or linear power
(Planetary Computer ``sentinel-1-rtc`` gamma0), converted to dB when read."""


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
            finer = _pixel_metres(src) < abs(transform.a) - 1e-9
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


def _pixel_metres(src: Any) -> float:
    """Source pixel width in metres (a geographic source, e.g. WorldCover in EPSG:4326: degrees
    of longitude at the raster's centre latitude), to compare with the metre grid."""
    import math

    width = abs(src.transform.a)
    if src.crs is not None and src.crs.is_geographic:
        lat = (src.bounds.top + src.bounds.bottom) / 2
        width *= 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    return width


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


def _tiles(kind: str, spec: Any) -> list[list[str]]:
    """A layer spec -> tiles, each a list of hrefs whose bands are stacked (one href, or a
    Sentinel-1 ``(vv, vh)`` pair).

    ``dem``/``landcover``: an href or a sequence of tile hrefs. ``sar``: an href (2-band), a
    ``(vv, vh)`` pair of hrefs, or a sequence of such (frames of one pass).
    """
    if isinstance(spec, str):
        return [[spec]]
    items = list(spec)
    if kind != "sar":
        return [[h] for h in items]
    if all(isinstance(h, str) for h in items):
        return [items]  # one (vv, vh) pair
    return [[t] if isinstance(t, str) else list(t) for t in items]


def _mosaic(kind: str, tiles: list[list[str]], crs: str, transform: Affine, shape: tuple[int, int],
            n_bands: int, strict: bool) -> np.ndarray | None:
    """Warp each tile onto the grid; a later tile fills only the pixels earlier ones left empty.
    None when no tile could be read (a missing tile is skipped unless ``strict``)."""
    out: np.ndarray | None = None
    for tile in tiles:
        try:
            arr = np.concatenate([warp_layer(h, crs, transform=transform, shape=shape, kind=kind) for h in tile])
        except MissingDataError:
            if strict:
                raise
            continue
        if arr.shape[0] < n_bands:
            raise MissingDataError(f"aux layer {kind} at {tile} has {arr.shape[0]} band(s); {n_bands} needed")
        arr = arr[:n_bands]
        if out is None:
            out = arr
            continue
        empty = out == 0 if kind == "landcover" else ~np.isfinite(out)
        out[empty] = arr[empty]
    return out


def to_class_index(codes: np.ndarray, lut: Mapping[int, int]) -> np.ndarray:
    """Source land-cover codes -> model class indices (int64); a code not in ``lut`` -> 0 (unknown)."""
    keys = np.fromiter(lut.keys(), np.int64, len(lut))
    vals = np.fromiter(lut.values(), np.int64, len(lut))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    return np.where(keys[pos] == codes, vals[pos], 0).astype(np.int64)


def linear_to_db(power: np.ndarray) -> np.ndarray:
    """Linear backscatter (gamma0/sigma0 power) -> dB; zero, negative or nodata -> NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(power > 0, 10.0 * np.log10(power), np.nan).astype(np.float32)


Bounds = tuple[float, float, float, float]


def _overlaps(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclass(frozen=True)
class AuxSource:
    """Where a chip's aux layers come from and how their values are encoded."""

    dem: str | tuple[str, ...] | None = None
    """DEM href (metres), tile hrefs to mosaic, or None."""
    landcover: str | tuple[str, ...] | None = None
    """Land-cover href, tile hrefs to mosaic, or None."""
    sar: tuple[tuple[Any, tuple[str, str]], ...] = ()
    """Sentinel-1 scenes as ``(datetime, (vv_href, vh_href))``; the nearest in time is used
    (with the other frames of its pass)."""
    sar_max_gap_days: float = SAR_MAX_GAP_DAYS
    """Largest |SAR date - granule date| in days; beyond it the chip gets no SAR (present 0)."""
    footprints: tuple[tuple[str, Bounds], ...] = ()
    """WGS 84 bounds (lon_min, lat_min, lon_max, lat_max) of tile / scene hrefs: a block reads
    only the tiles over it. An href without a footprint is read for every block."""
    landcover_codes: str = "index"
    """One of :data:`LANDCOVER_CODES`."""
    sar_units: str = "dB"
    """One of :data:`SAR_UNITS`."""
    origin: str = ""
    """Where the layers were found (catalog or STAC source), for the run's notes."""

    def __post_init__(self) -> None:
        if self.landcover_codes not in LANDCOVER_CODES:
            raise ConfigError(f"landcover_codes must be one of {LANDCOVER_CODES}, got {self.landcover_codes!r}")
        if self.sar_units not in SAR_UNITS:
            raise ConfigError(f"sar_units must be one of {SAR_UNITS}, got {self.sar_units!r}")

    def _over(self, hrefs: Any, where: Bounds | None) -> Any:
        """``hrefs`` (one or a tuple) narrowed to those whose footprint overlaps ``where``."""
        if hrefs is None or isinstance(hrefs, str) or where is None:
            return hrefs
        fp = dict(self.footprints)
        kept = tuple(h for h in hrefs if h not in fp or _overlaps(fp[h], where))
        return kept or None

    def layers_for(self, when: Any, where: Bounds | None = None) -> dict[str, Any]:
        """The ``read_aux`` layer mapping for a granule acquired at ``when`` (aware datetime),
        over a block with WGS 84 bounds ``where`` (None: no footprint filter)."""
        layers: dict[str, Any] = {"dem": self._over(self.dem, where),
                                  "landcover": self._over(self.landcover, where), "sar": None}
        fp = dict(self.footprints)
        scenes = [(t, p) for t, p in self.sar
                  if where is None or p[0] not in fp or _overlaps(fp[p[0]], where)]
        if scenes and when is not None:
            t0, _ = min(scenes, key=lambda s: abs((s[0] - when).total_seconds()))
            if abs((t0 - when).total_seconds()) / 86400 <= self.sar_max_gap_days:
                same_pass = tuple(p for t, p in scenes if abs((t - t0).total_seconds()) <= SAR_PASS_S)
                layers["sar"] = same_pass[0] if len(same_pass) == 1 else same_pass
        return layers

    def block_bounds(self, grid: Any, window: tuple[int, int, int, int]) -> Bounds | None:
        """WGS 84 bounds of an output-grid window (None when no footprints are known: nothing
        to filter, and no reprojection is paid for)."""
        if not self.footprints:
            return None
        from rasterio.warp import transform_bounds

        t = grid.output_transform
        r, c, h, w = window
        x0, y0 = t * (c, r + h)
        x1, y1 = t * (c + w, r)
        return tuple(transform_bounds(grid.crs, "EPSG:4326", min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))

    def read_options(self) -> dict[str, Any]:
        """The value-convention keywords of :func:`read_aux` for this source."""
        lut = None
        if self.landcover_codes == "esa-worldcover":
            from lssr_ray.data.pair_sources import landcover_lookup

            lut = landcover_lookup(WORLDCOVER_CSV)
        return {"landcover_lut": lut, "sar_linear": self.sar_units == "linear"}


def read_aux(
    layers: Mapping[str, Any],
    crs: str,
    *,
    transform: Affine,
    shape: tuple[int, int],
    strict: bool = False,
    landcover_lut: Mapping[int, int] | None = None,
    sar_linear: bool = False,
) -> AuxArrays:
    """Warp the aux layers named in ``layers`` (``dem``, ``landcover``, ``sar`` -> href) onto a grid.

    ``dem``/``landcover`` are an href or a sequence of tile hrefs (mosaicked). ``sar`` is a
    2-band (VV, VH) raster, a pair of 1-band hrefs ``(vv, vh)``, or a sequence of pairs (frames,
    mosaicked). ``landcover_lut`` maps source codes to class indices (None: the file holds class
    indices already); ``sar_linear`` says the SAR files hold linear power (converted to dB).
    A layer missing from ``layers`` (or None), or one that cannot be opened when ``strict`` is
    False, is filled (NaN / 0) with present = 0. A layer that has no valid pixel on the grid is
    also reported absent.
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
        spec = layers.get(kind)
        if not spec:
            continue
        arr = _mosaic(kind, _tiles(kind, spec), crs, transform, shape, out[kind].shape[0], strict)
        if arr is None:
            continue
        if kind == "landcover" and landcover_lut is not None:
            arr = to_class_index(arr, landcover_lut)
        elif kind == "sar" and sar_linear:
            arr = linear_to_db(arr)
        has = bool((arr != 0).any()) if kind == "landcover" else bool(np.isfinite(arr).any())
        if has:
            out[kind] = arr
            present[i] = 1.0
    return AuxArrays(out["dem"], out["landcover"], out["sar"], present)


__all__ = ["AUX_KINDS", "LANDCOVER_CODES", "SAR_MAX_GAP_DAYS", "SAR_UNITS", "AuxArrays", "AuxSource", "linear_to_db", "read_aux", "to_class_index", "warp_layer"]
