"""HLS v2.0 conventions: granule/file naming, band tables, scaling and the Fmask bit layout.

Pure Python + numpy (no I/O). The tiling grid (MGRS tile id -> UTM pixel grid: :func:`tile_grid`,
:func:`mgrs_tiles`) lives in :mod:`lssr_ray.data.mgrs` and is re-exported here.

References: the HLS v2.0 User Guide (LP DAAC), file names like
``HLS.L30.T31UDS.2018214T103900.v2.0.B04.tif``: product, MGRS tile, acquisition date as
year + day-of-year + ``T`` + UTC time, version, band id.

Reflectance bands are int16 with ``scale_factor`` 0.0001 (reflectance = DN * SCALE) and
nodata ``-9999``; the Fmask band is uint8 with fill 255.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

import numpy as np

from lssr_ray.data.mgrs import mgrs_tiles, tile_grid
from lssr_ray.errors import ConfigError

SCALE = 0.0001
"""Reflectance = int16 DN * SCALE (unitless, 0..1)."""
NODATA = -9999
"""Nodata value of the int16 reflectance COGs."""
FMASK_FILL = 255
"""Fill value of the uint8 Fmask band."""
VALID_RANGE = (-100, 16000)
"""Valid DN range of HLS v2.0 reflectance bands (outside = not a valid measurement)."""
VERSION = "v2.0"
PRODUCTS = ("L30", "S30")
STAC_COLLECTIONS: dict[str, str] = {"L30": "HLSL30_2.0", "S30": "HLSS30_2.0"}
"""Product -> collection id in NASA's CMR-STAC (provider ``LPCLOUD``) for HLS v2.0."""
CMR_STAC_URL = "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
"""STAC API root of LP DAAC's cloud-hosted collections (HLS v2.0 among them)."""

#: common name -> band id, per product (docs/ARCHITECTURE.md).
BANDS: dict[str, dict[str, str]] = {
    "L30": {
        "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
        "nir": "B05", "swir1": "B06", "swir2": "B07",
    },
    "S30": {
        "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
        "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "nir_broad": "B08",
        "nir": "B8A", "swir1": "B11", "swir2": "B12",
    },
}
#: Central wavelengths in micrometres (for STAC eo:bands), band id -> um.
WAVELENGTH_UM: dict[str, dict[str, float]] = {
    "L30": {"B01": 0.443, "B02": 0.482, "B03": 0.561, "B04": 0.655, "B05": 0.865,
            "B06": 1.609, "B07": 2.201},
    "S30": {"B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705,
            "B06": 0.740, "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B11": 1.610, "B12": 2.190},
}

# Fmask bits (HLS v2.0 User Guide, Table "Fmask"): bit -> meaning.
FMASK_CIRRUS = 0
"""Bit 0: cirrus. HLS v2.0 lists it as reserved/not used (Fmask 4 folds cirrus into cloud)."""
FMASK_CLOUD = 1
FMASK_ADJACENT = 2
"""Bit 2: adjacent to cloud or cloud shadow."""
FMASK_SHADOW = 3
FMASK_SNOW = 4
FMASK_WATER = 5
FMASK_AEROSOL_SHIFT = 6
"""Bits 6-7: aerosol level, 0 climatology, 1 low, 2 moderate, 3 high."""

_NAME_RE = re.compile(
    r"^HLS\.(?P<product>L30|S30)\.T(?P<tile>\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2})\."
    r"(?P<year>\d{4})(?P<doy>\d{3})T(?P<hms>\d{6})\.(?P<version>v\d+\.\d+)"
    r"(?:\.(?P<band>[A-Za-z0-9]+))?(?:\.(?P<ext>tif))?$"
)


@dataclass(frozen=True)
class HLSName:
    """The parts of an HLS v2.0 granule or band-file name."""

    product: str
    """``"L30"`` or ``"S30"``."""
    tile: str
    """MGRS tile without the leading ``T`` (e.g. ``"31UDS"``)."""
    datetime: _dt.datetime
    """Acquisition time, UTC, second precision."""
    version: str = VERSION
    band: str | None = None
    """Band id (``"B04"``, ``"Fmask"``) or None for the granule id."""

    @property
    def granule_id(self) -> str:
        """``HLS.L30.T31UDS.2018214T103900.v2.0`` (no band, no extension)."""
        t = self.datetime
        return (f"HLS.{self.product}.T{self.tile}.{t.year:04d}{t.timetuple().tm_yday:03d}"
                f"T{t.hour:02d}{t.minute:02d}{t.second:02d}.{self.version}")

    def filename(self, band: str | None = None) -> str:
        """Band file name, e.g. ``HLS.L30.T31UDS.2018214T103900.v2.0.B04.tif``."""
        b = band or self.band
        if b is None:
            raise ConfigError("filename() needs a band id (e.g. 'B04' or 'Fmask')")
        return f"{self.granule_id}.{b}.tif"


def format_name(product: str, tile: str, when: _dt.datetime, band: str | None = None) -> str:
    """Granule id (band None) or band file name for ``product`` on MGRS ``tile`` at ``when`` (UTC)."""
    if product not in PRODUCTS:
        raise ConfigError(f"unknown HLS product {product!r}; valid: {PRODUCTS}")
    tile = tile.removeprefix("T")
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    name = HLSName(product, tile, when.replace(microsecond=0), VERSION, band)
    return name.filename() if band else name.granule_id


def parse_name(name: str) -> HLSName:
    """Parse a granule id or band file name (a directory prefix is ignored)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    m = _NAME_RE.match(base)
    if not m:
        raise ConfigError(
            f"not an HLS v2.0 name: {base!r}; expected like 'HLS.L30.T31UDS.2018214T103900.v2.0.B04.tif'"
        )
    try:
        day = _dt.datetime.strptime(m["year"] + m["doy"] + m["hms"], "%Y%j%H%M%S")
    except ValueError as exc:
        raise ConfigError(f"not an HLS v2.0 name: {base!r} has no valid date/time ({exc})") from exc
    return HLSName(m["product"], m["tile"], day.replace(tzinfo=_dt.UTC), m["version"], m["band"])


def band_id(product: str, common_name: str) -> str:
    """HLS band id of a common name (``band_id("S30", "nir") == "B8A"``)."""
    if product not in BANDS:
        raise ConfigError(f"unknown HLS product {product!r}; valid: {PRODUCTS}")
    table = BANDS[product]
    if common_name not in table:
        raise ConfigError(f"unknown band {common_name!r} for {product}; valid: {sorted(table)}")
    return table[common_name]


def to_reflectance(dn: np.ndarray, *, scale: float = SCALE, offset: float = 0.0,
                   nodata: float = NODATA) -> np.ndarray:
    """int16 DN -> float32 reflectance (DN * scale + offset); ``nodata`` -> NaN. Shape is kept.

    The defaults are HLS v2.0's; readers pass the values a file's header states."""
    arr = np.asarray(dn)
    out = arr.astype(np.float32) * np.float32(scale)
    if offset:
        out += np.float32(offset)
    out[arr == nodata] = np.nan
    return out


def from_reflectance(refl: np.ndarray) -> np.ndarray:
    """float reflectance -> int16 DN (rounded); NaN or outside VALID_RANGE -> NODATA."""
    r = np.asarray(refl, dtype=np.float64)
    dn = np.full(r.shape, NODATA, dtype=np.int16)
    ok = np.isfinite(r)
    v = np.round(r[ok] / SCALE)
    v = np.where((v < VALID_RANGE[0]) | (v > VALID_RANGE[1]), NODATA, v)
    dn[ok] = v.astype(np.int16)
    return dn


def encode_fmask(
    *,
    cirrus: np.ndarray | None = None,
    cloud: np.ndarray | None = None,
    adjacent: np.ndarray | None = None,
    shadow: np.ndarray | None = None,
    snow: np.ndarray | None = None,
    water: np.ndarray | None = None,
    aerosol: np.ndarray | int = 0,
    fill: np.ndarray | None = None,
) -> np.ndarray:
    """Pack boolean layers into an HLS v2.0 Fmask uint8 array (fill pixels = 255).

    All given arrays must share one shape; ``aerosol`` is 0..3 (scalar or array).
    """
    layers = {FMASK_CIRRUS: cirrus, FMASK_CLOUD: cloud, FMASK_ADJACENT: adjacent,
              FMASK_SHADOW: shadow, FMASK_SNOW: snow, FMASK_WATER: water}
    shapes = {np.shape(v) for v in (*layers.values(), fill) if v is not None}
    if len(shapes) != 1:
        raise ConfigError(f"encode_fmask needs at least one layer, all of one shape; got {shapes}")
    shape = shapes.pop()
    out = np.zeros(shape, dtype=np.uint8)
    for bit, layer in layers.items():
        if layer is not None:
            out |= (np.asarray(layer, dtype=bool).astype(np.uint8) << bit)
    aer = np.asarray(aerosol)
    if np.any((aer < 0) | (aer > 3)):
        raise ConfigError("aerosol level must be 0..3 (climatology, low, moderate, high)")
    out |= (aer.astype(np.uint8) << FMASK_AEROSOL_SHIFT)
    if fill is not None:
        out[np.asarray(fill, dtype=bool)] = FMASK_FILL
    return out


def decode_fmask(fmask: np.ndarray) -> dict[str, np.ndarray]:
    """Unpack an Fmask array into boolean layers (+ ``aerosol`` 0..3 and ``fill``)."""
    f = np.asarray(fmask).astype(np.uint8)
    fill = f == FMASK_FILL
    names = {"cirrus": FMASK_CIRRUS, "cloud": FMASK_CLOUD, "adjacent": FMASK_ADJACENT,
             "shadow": FMASK_SHADOW, "snow": FMASK_SNOW, "water": FMASK_WATER}
    out = {k: (((f >> b) & 1).astype(bool) & ~fill) for k, b in names.items()}
    out["aerosol"] = np.where(fill, 0, (f >> FMASK_AEROSOL_SHIFT) & 3).astype(np.uint8)
    out["fill"] = fill
    return out


__all__ = [
    "BANDS",
    "FMASK_FILL",
    "NODATA",
    "PRODUCTS",
    "SCALE",
    "VALID_RANGE",
    "VERSION",
    "WAVELENGTH_UM",
    "HLSName",
    "band_id",
    "decode_fmask",
    "encode_fmask",
    "format_name",
    "from_reflectance",
    "mgrs_tiles",
    "parse_name",
    "tile_grid",
    "to_reflectance",
]
