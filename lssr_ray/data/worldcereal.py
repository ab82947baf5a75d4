"""Readers for the WorldCereal NetCDF samples (training patches and the monthly openEO cube).

Every reader returns xarray objects with a rioxarray CRS and transform (UTM, 10 m or 20 m,
north-up, dims ``(timestamp, y, x)`` or ``(y, x)``, coordinates = pixel centres in metres).

Encodings (see the samples' PROVENANCE.md):

* Patch files (``L8_SR_10m``, ``S2_L2A_10m``/``20m``, ``S1_GRD-ASCENDING_20m``, ``OUTPUT_POLY``)
  are CF-encoded: ``scale_factor`` and ``_FillValue`` (0) are applied, fill -> NaN.
  Reflectance is unitless (0..1), S1 ``VV``/``VH`` are sigma0 in dB, Landsat ``B10``/``B11``
  are brightness temperature in K, ``pixel_qa``/``SCL``/``LC``/``CT`` stay integer codes
  (returned as float with NaN fill; cast after masking).
  Landsat band names use Landsat numbering: B02 blue, B03 green, B04 red, B05 nir,
  B06 swir1, B07 swir2. Landsat SR was stored as uint16, so small negative reflectances
  wrapped to values near 6.5 after scaling (use :func:`l8_reflectance_int16` for the int16 view).
* The monthly cube (``worldcereal_preprocessed_inputs.nc``) stores int16 with
  ``_Unsigned = "true"``: read as uint16; 65535 = nodata; S2 bands are reflectance x 10000;
  S1 sigma0 dB = 20*log10(DN) - 83 for DN > 0; elevation in m, slope in degrees.

The 10 m L8 layer is a 3x3 nearest-neighbour copy of 30 m cells; :mod:`lssr_ray.data.blockgrid`
recovers their lattice.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lssr_ray.errors import MissingDataError
from lssr_ray.fileio import open_netcdf

PATCH_LAYERS = {
    "l8": "L8_SR_10m_",
    "s2_10m": "S2_L2A_10m_",
    "s2_20m": "S2_L2A_20m_",
    "s1": "S1_GRD-ASCENDING_20m_",
    "labels": "OUTPUT_POLY-",
}
#: Landsat numbering in the L8 patch file -> HLS common name.
L8_COMMON_NAMES = {"B02": "blue", "B03": "green", "B04": "red", "B05": "nir", "B06": "swir1", "B07": "swir2"}


def _georef(ds, crs_wkt: str | None):
    """Write CRS (from the grid-mapping WKT) and the transform implied by centre coordinates."""
    import rioxarray  # noqa: F401  (registers .rio)
    from affine import Affine

    if crs_wkt:
        ds = ds.rio.write_crs(crs_wkt)
    xs, ys = ds["x"].values, ds["y"].values
    if xs.size > 1 and ys.size > 1:
        dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
        t = Affine(dx, 0.0, float(xs[0]) - dx / 2, 0.0, dy, float(ys[0]) - dy / 2)
        ds = ds.rio.write_transform(t)
    return ds


def _crs_wkt(ds) -> str | None:
    for name in ("spatial_ref", "crs"):
        if name in ds.variables:
            a = ds[name].attrs
            return a.get("crs_wkt") or a.get("spatial_ref")
    return None


def open_nc(path: str | Path, *, mask_and_scale: bool = True):
    """Open one WorldCereal patch NetCDF as an xarray Dataset with CRS + transform set.

    ``mask_and_scale=False`` returns the stored integers (no scale, fill kept).
    """
    ds = open_netcdf(path, mask_and_scale=mask_and_scale)
    return _georef(ds, _crs_wkt(ds))


@dataclass
class WorldCerealPatch:
    """One WorldCereal training patch folder; each layer opens lazily on first access.

    Layers are None when the folder lacks that file. ``l8``, ``s2_10m``: 10 m grid;
    ``s2_20m``, ``s1``, ``dem``: 20 m grid; ``labels``: 10 m ``LC``/``CT``/``IRR`` codes.
    """

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Layer name -> file for the layers present."""

    def _open(self, key: str):
        return open_nc(self.files[key]) if key in self.files else None

    @functools.cached_property
    def l8(self):
        """Landsat-8 SR on the 10 m grid (nearest-neighbour copy of 30 m), B02..B07 0..1, pixel_qa."""
        return self._open("l8")

    @functools.cached_property
    def s2_10m(self):
        """Sentinel-2 L2A B02, B03, B04, B08 reflectance (10 m)."""
        return self._open("s2_10m")

    @functools.cached_property
    def s2_20m(self):
        """Sentinel-2 L2A B05, B06, B07, B8A, B11, B12 reflectance and SCL (20 m)."""
        return self._open("s2_20m")

    @functools.cached_property
    def s1(self):
        """Sentinel-1 GRD ascending sigma0 VV, VH in dB (20 m)."""
        return self._open("s1")

    @functools.cached_property
    def labels(self):
        """Rasterised LPIS labels: ``LC`` land-cover code, ``CT`` crop-type code, ``IRR`` (10 m)."""
        return self._open("labels")

    @functools.cached_property
    def dem(self):
        """Elevation DataArray (y, x) float32 metres, NaN missing, or None."""
        import rioxarray

        if "dem" not in self.files:
            return None
        da = rioxarray.open_rasterio(self.files["dem"], masked=True).squeeze("band", drop=True)
        return da.astype(np.float32)


def open_patch(folder: str | Path, *, dem: str | Path | None = None) -> WorldCerealPatch:
    """Find the patch layers in ``folder`` (and a ``dem_*.tif`` there unless ``dem`` is given)."""
    f = Path(folder)
    if not f.is_dir():
        raise MissingDataError(f"patch folder not found: {f}")
    files: dict[str, Path] = {}
    for key, prefix in PATCH_LAYERS.items():
        hits = sorted(f.glob(prefix + "*.nc"))
        if hits:
            files[key] = hits[0]
    dem_path = Path(dem) if dem else next(iter(sorted(f.glob("dem_*.tif"))), None)
    if dem_path is not None:
        files["dem"] = dem_path
    if not files:
        raise MissingDataError(f"{f} holds no WorldCereal patch files; expected prefixes {list(PATCH_LAYERS.values())}")
    return WorldCerealPatch(f, files)


def l8_reflectance_int16(patch: WorldCerealPatch, band: str):
    """Landsat SR band (Landsat numbering ``"B02"``..``"B07"``) as int16 DN (scale 0.0001).

    The file stores the Collection-1 int16 SR as uint16, so negatives wrapped around
    (e.g. 65513 = -23). Fill (0) is returned as 0; combine with ``pixel_qa`` to mask it.
    Returns a DataArray (timestamp, y, x) int16 with the patch's CRS/transform.
    """
    if "l8" not in patch.files:
        raise MissingDataError(f"{patch.folder} has no L8_SR_10m file")
    if band not in L8_COMMON_NAMES:
        raise MissingDataError(f"unknown Landsat SR band {band!r}; valid: {sorted(L8_COMMON_NAMES)}")
    raw = open_nc(patch.files["l8"], mask_and_scale=False)[band]
    return raw.copy(data=raw.values.view(np.int16))


_S1_HESBAYE = re.compile(r"^S1-SIGMA0-(VV|VH)$")


def open_monthly_inputs(path: str | Path):
    """The hesbaye openEO cube as a decoded Dataset (t, y, x) with CRS + transform.

    S2 bands -> float32 reflectance (DN / 10000), S1 -> float32 dB, elevation/slope ->
    float32 m / degrees; 65535 -> NaN everywhere. AgERA5 layers are kept as uint16.
    """
    import xarray as xr

    # mask_and_scale applies _Unsigned (int16 -> uint16); there is no _FillValue to mask.
    ds = open_netcdf(path, mask_and_scale=True)
    out = {}
    for name, da in ds.data_vars.items():
        if da.ndim != 3:
            continue
        v = da.values
        if v.dtype != np.uint16:  # _Unsigned must have made it uint16
            raise MissingDataError(f"{path}:{name} decoded as {v.dtype}, expected uint16 (_Unsigned)")
        nod = v == 65535
        if name.startswith("S2-L2A-"):
            f = v.astype(np.float32) / np.float32(10000)
        elif _S1_HESBAYE.match(name):
            with np.errstate(divide="ignore"):
                f = (20.0 * np.log10(v.astype(np.float64)) - 83.0).astype(np.float32)
            nod |= v == 0
        elif name in ("elevation", "slope"):
            f = v.astype(np.float32)
        else:
            out[name] = da
            continue
        f[nod] = np.nan
        out[name] = da.copy(data=f)
    res = xr.Dataset(out, attrs=ds.attrs)
    return _georef(res, _crs_wkt(ds))


__all__ = ["L8_COMMON_NAMES", "WorldCerealPatch", "l8_reflectance_int16", "open_monthly_inputs", "open_nc",
           "open_patch"]
