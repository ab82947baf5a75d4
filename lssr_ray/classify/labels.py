"""Crop-type labels: the WorldCereal code table and label rasters put onto a target grid.

Labels are WorldCereal crop-type codes (uint16, e.g. 1200). Code ``0`` is "no label" (nodata),
as in the ``CT`` layer of the WorldCereal ``OUTPUT_POLY-*`` patches. Names come from the data file
``croptype_codes.csv`` (provenance in ``CROPTYPE_CODES_PROVENANCE.md``); a code missing from it is
reported and shown as ``"code <N>"``, never merged into another class or given an invented name.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.errors import ConfigError, CRSMismatchError, MissingDataError
from lssr_ray.fileio import open_netcdf

__all__ = [
    "NODATA_CODE",
    "CropTypeTable",
    "LabelRaster",
    "UnknownCodeWarning",
    "load_croptype_table",
    "load_labels",
    "read_netcdf_variable",
]

NODATA_CODE = 0
"""Crop-type code meaning "no label" in label rasters and "no valid input" in crop_type maps."""

_TABLE_PATH = Path(__file__).with_name("croptype_codes.csv")


class UnknownCodeWarning(UserWarning):
    """A label raster holds crop-type codes that the code table does not list."""


@dataclass(frozen=True)
class CropTypeTable:
    """WorldCereal crop-type code -> name table (code 0 = nodata is never in it)."""

    codes: tuple[int, ...]
    """Crop-type codes, unique, ascending."""
    names: tuple[str, ...]
    """Name of each code, as written in the source table."""

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.names):
            raise ConfigError(f"{len(self.codes)} codes but {len(self.names)} names")
        if len(set(self.codes)) != len(self.codes):
            dup = sorted({c for c in self.codes if self.codes.count(c) > 1})
            raise ConfigError(f"crop-type table has duplicate codes {dup}; each code must be unique")
        if NODATA_CODE in self.codes:
            raise ConfigError(f"code {NODATA_CODE} is reserved for nodata and cannot be a class")

    def __contains__(self, code: object) -> bool:
        return int(code) in self.codes  # type: ignore[call-overload]

    def name(self, code: int) -> str:
        """Name of ``code``; ``"code <N>"`` when the table does not list it."""
        code = int(code)
        if code in self.codes:
            return self.names[self.codes.index(code)]
        return f"code {code}"

    def subset(self, codes: list[int] | tuple[int, ...] | np.ndarray) -> CropTypeTable:
        """Table for exactly ``codes`` (sorted); unlisted codes get ``"code <N>"`` names."""
        cs = sorted({int(c) for c in codes} - {NODATA_CODE})
        return CropTypeTable(tuple(cs), tuple(self.name(c) for c in cs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"codes": [...], "names": [...], "nodata": 0}``."""
        return {"codes": list(self.codes), "names": list(self.names), "nodata": NODATA_CODE}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropTypeTable:
        return cls(tuple(int(c) for c in data["codes"]), tuple(str(n) for n in data["names"]))


def load_croptype_table(path: str | Path | None = None) -> CropTypeTable:
    """Read a ``code,name[,source]`` CSV (default: the bundled WorldCereal table)."""
    p = Path(path) if path is not None else _TABLE_PATH
    if not p.is_file():
        raise MissingDataError(f"crop-type code table {p} does not exist")
    with p.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"code", "name"} <= set(reader.fieldnames):
            raise ConfigError(f"{p}: needs columns 'code' and 'name', has {reader.fieldnames}")
        rows = sorted((int(r["code"]), r["name"]) for r in reader)
    return CropTypeTable(tuple(c for c, _ in rows), tuple(n for _, n in rows))


@dataclass(frozen=True)
class LabelRaster:
    """A label raster on the target grid."""

    codes: np.ndarray
    """(H, W) uint16 crop-type codes, 0 = no label."""
    crs: Any
    """Target CRS (``rasterio.crs.CRS``)."""
    transform: Any
    """Target affine transform (``affine.Affine``), metres."""
    warped: bool
    """True when the source grid differed and was reprojected with mode resampling."""
    unknown_codes: dict[int, int] = field(default_factory=dict)
    """Codes present in the labels but absent from the table -> pixel count. Kept as they are."""


def read_netcdf_variable(path: str | Path, variable: str) -> tuple[np.ndarray, Any, Any, dict, Any]:
    """Read one variable of a WorldCereal NetCDF patch, raw (no scaling, no masking).

    Returns ``(array, crs, transform, attrs, times)``: array (y, x) or (time, y, x) in the stored
    dtype; ``crs`` from the ``spatial_ref`` WKT (or the ``epsg`` attribute); ``transform`` built
    from the regular pixel-centre coordinates (metres); ``attrs`` the variable attributes
    (``scale_factor``, ``_FillValue``); ``times`` datetime64 values of the time axis or None.
    """
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    p = Path(path)
    with open_netcdf(p, mask_and_scale=False) as ds:
        if variable not in ds.data_vars:
            raise ConfigError(f"{p.name} has no variable {variable!r}; it has {sorted(ds.data_vars)}")
        da = ds[variable]
        if "x" not in da.dims or "y" not in da.dims:
            raise ConfigError(f"{p.name}:{variable} has dims {da.dims}; need (..., y, x)")
        x = ds["x"].values.astype(float)
        y = ds["y"].values.astype(float)
        if x.size < 2 or y.size < 2 or np.ptp(np.diff(x)) > 1e-6 or np.ptp(np.diff(y)) > 1e-6:
            raise ConfigError(f"{p.name}: x/y coordinates are not a regular grid of >= 2 pixels")
        rx, ry = float(x[1] - x[0]), float(y[1] - y[0])
        if rx <= 0 or ry >= 0:
            raise ConfigError(f"{p.name}: expected x increasing and y decreasing (north-up)")
        transform = from_origin(x[0] - rx / 2, y[0] - ry / 2, rx, -ry)
        crs = None
        if "spatial_ref" in ds.variables:
            sr = ds["spatial_ref"].attrs
            wkt = sr.get("crs_wkt") or sr.get("spatial_ref")
            crs = CRS.from_wkt(wkt) if wkt else None
        if crs is None and "epsg" in ds.attrs:
            crs = CRS.from_epsg(int(ds.attrs["epsg"]))
        times = None
        tdims = [d for d in da.dims if d not in ("x", "y")]
        if tdims:
            times = ds[tdims[0]].values
        arr = da.transpose(*tdims, "y", "x").values
        attrs = dict(da.attrs)
        attrs.update({k: v for k, v in da.encoding.items() if k in ("_FillValue", "scale_factor")})
    return arr, crs, transform, attrs, times


def _read_source(path: Path, variable: str) -> tuple[np.ndarray, Any, Any, float | None]:
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        arr, crs, transform, attrs, _ = read_netcdf_variable(path, variable)
        if arr.ndim != 2:
            raise ConfigError(f"{path.name}:{variable} has shape {arr.shape}; a label layer is 2-D")
        fill = attrs.get("_FillValue", attrs.get("NoData"))
        return arr, crs, transform, None if fill is None else float(fill)
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            arr = src.read(1)
            return arr, src.crs, src.transform, src.nodata
    except RasterioIOError as exc:
        raise MissingDataError(f"cannot open label raster {path}: {exc}") from exc


def load_labels(
    path: str | Path,
    table: CropTypeTable | None = None,
    *,
    crs: Any,
    transform: Any,
    shape: tuple[int, int],
    variable: str = "CT",
) -> LabelRaster:
    """Load a crop-type label raster onto a target grid.

    ``path`` is a GeoTIFF (band 1) or a WorldCereal NetCDF patch (``variable``, default ``CT``).
    ``crs``/``transform``/``shape`` describe the target grid (e.g. the 10 m UTM output grid;
    ``shape`` is (H, W)). The same grid is used as is; another CRS or resolution is reprojected
    with ``Resampling.mode`` (class codes are never averaged; nodata pixels do not vote). The source nodata (or 0) becomes 0.
    A raster without a CRS raises :class:`CRSMismatchError`. Codes not in ``table`` (default: the
    bundled WorldCereal table) are kept, counted in ``unknown_codes`` and warned about.
    """
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, reproject

    p = Path(path)
    if not p.exists():
        raise MissingDataError(f"label raster {p} does not exist")
    table = table if table is not None else load_croptype_table()
    dst_crs = CRS.from_user_input(crs)
    arr, src_crs, src_transform, src_nodata = _read_source(p, variable)
    if src_crs is None:
        raise CRSMismatchError(
            f"label raster {p.name} has no CRS, so it cannot be placed on the {dst_crs} grid; "
            "write a CRS into it (e.g. rio edit-info --crs EPSG:326xx) or give a georeferenced file"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if np.any(np.isfinite(arr) & (arr != np.round(arr))):
            raise ConfigError(f"label raster {p.name} holds non-integer values; need class codes")
        arr = np.nan_to_num(arr, nan=NODATA_CODE)
    if arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max:
        raise ConfigError(f"label raster {p.name} holds codes outside 0..65535")
    codes = arr.astype(np.uint16)
    if src_nodata is not None and src_nodata != NODATA_CODE and np.isfinite(src_nodata):
        codes[arr == src_nodata] = NODATA_CODE
    same = (
        CRS.from_user_input(src_crs) == dst_crs
        and tuple(codes.shape) == tuple(shape)
        and src_transform.almost_equals(transform, precision=1e-6)
    )
    if not same:
        out = np.zeros(tuple(shape), np.uint16)
        reproject(
            codes,
            out,
            src_transform=src_transform,
            src_crs=src_crs,
            src_nodata=NODATA_CODE,
            dst_transform=transform,
            dst_crs=dst_crs,
            dst_nodata=NODATA_CODE,
            resampling=Resampling.mode,
        )
        codes = out
    present, counts = np.unique(codes[codes != NODATA_CODE], return_counts=True)
    unknown = {int(c): int(n) for c, n in zip(present, counts) if int(c) not in table}
    if unknown:
        warnings.warn(
            f"label raster {p.name} holds crop-type codes not in the code table: {unknown} "
            "(code: pixels); they are kept as separate classes named 'code <N>'",
            UnknownCodeWarning,
            stacklevel=2,
        )
    return LabelRaster(codes=codes, crs=dst_crs, transform=transform, warped=not same, unknown_codes=unknown)
