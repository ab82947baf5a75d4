"""What every WorldCereal -> pairs conversion shares: its settings, its report, the land-cover
lookup and small grid/time helpers (:mod:`lssr_ray.data.pairs_convert` runs the conversion)."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lssr_ray.errors import ConfigError, MissingDataError

NIR_CHOICES = ("B08", "B8A")
LANDCOVER_CSV = Path(__file__).with_name("landcover_classes.csv")
REFL_RANGE = (-0.01, 1.6)
"""Reflectance outside this range is treated as invalid (HLS valid DN range -100..16000)."""


@dataclass
class ConversionReport:
    """What :func:`convert_worldcereal` wrote and what it skipped (item, reason)."""

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append((item, reason))

    def summary(self) -> str:
        n_real = sum("_L8-S2_" in w for w in self.written)
        lines = [f"wrote {len(self.written)} pairs ({n_real} real L8-S2, {len(self.written) - n_real} synthetic)",
                 f"skipped {len(self.skipped)}:"]
        lines += [f"  {i}: {r}" for i, r in self.skipped]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def landcover_lookup(path: str | Path = LANDCOVER_CSV) -> dict[int, int] | None:
    """WorldCereal LC code -> class index from ``landcover_classes.csv``; None if the file is absent.

    Reads the first column whose header mentions ``code`` (or ``lc``) and the first whose
    header mentions ``index``.
    """
    import csv

    p = Path(path)
    if not p.is_file():
        return None
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    header = [h.strip().lower() for h in rows[0]]
    code_col = next((i for i, h in enumerate(header) if "code" in h or h in ("lc", "worldcereal_lc")), None)
    idx_col = next((i for i, h in enumerate(header) if "index" in h), None)
    if code_col is None or idx_col is None:
        raise ConfigError(f"{p}: need a code column and an index column in the header, got {rows[0]}")
    out = {}
    for r in rows[1:]:
        try:
            out[int(float(r[code_col]))] = int(r[idx_col])
        except (ValueError, IndexError):
            continue
    return out


def day(t) -> _dt.date:
    return np.datetime64(t, "D").astype(_dt.date)


def tile_offsets(n: int, chip: int, stride: int | None = None) -> list[int]:
    """Chip origins along an axis of n cells. Default: round(n / chip) chips, evenly spread,
    overlapping. With ``stride``: 0, stride, 2 stride, ... as long as the chip fits (evaluation
    chips whose scored cores, chip minus a halo, tile the area without overlap)."""
    if stride is not None:
        return list(range(0, n - chip + 1, stride))
    k = max(1, round(n / chip))
    if k == 1:
        return [0]
    return sorted({round(i * (n - chip) / (k - 1)) for i in range(k)})


def resample(arr: np.ndarray, src_transform, dst_transform, shape, crs, *, method: str) -> np.ndarray:
    """(..., h, w) float array from one grid to another in the same CRS (rasterio reproject)."""
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    a = np.asarray(arr, dtype=np.float32)
    lead = a.shape[:-2]
    src = a.reshape((-1,) + a.shape[-2:])
    dst = np.full((src.shape[0], *shape), np.nan, np.float32)
    c = CRS.from_user_input(crs)
    reproject(source=src, destination=dst, src_transform=src_transform, src_crs=c, src_nodata=np.nan,
              dst_transform=dst_transform, dst_crs=c, dst_nodata=np.nan,
              resampling=getattr(Resampling, method))
    return dst.reshape(lead + tuple(shape))


def crs_string(da) -> str:
    crs = da.rio.crs
    if crs is None:
        raise MissingDataError("layer has no CRS (no spatial_ref/crs grid mapping)")
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@dataclass
class ConvertSettings:
    """The options of :func:`~lssr_ray.data.pairs_convert.convert_worldcereal`, checked."""

    max_date_gap_days: int
    min_clear: float
    chip_size: int
    nir: str
    band_adjust: str
    mtf_at_nyquist: float
    max_sar_gap_days: int
    real: bool
    synthetic: bool
    lc_lookup: dict[int, int] | None
    chip_stride: int | None = None


def patch_id(folder: Path, ds) -> str:
    return str(ds.attrs.get("location_id") or re.sub(r"[^A-Za-z0-9]+", "-", folder.name))


def nearest_time(times: np.ndarray, t, max_days: int) -> int | None:
    if times.size == 0:
        return None
    d = np.abs((times - np.datetime64(t)).astype("timedelta64[s]").astype(np.float64)) / 86400.0
    i = int(np.argmin(d))
    return i if d[i] <= max_days + 0.5 else None
