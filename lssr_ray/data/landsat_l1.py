"""Landsat-8 Level-1 scenes: MTL (ODL text) metadata and DN -> top-of-atmosphere reflectance.

TOA reflectance (unitless) = (REFLECTANCE_MULT_BAND_x * DN + REFLECTANCE_ADD_BAND_x)
/ sin(SUN_ELEVATION), per the USGS Landsat-8 data users handbook. DN 0 is fill.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.errors import ConfigError, MissingDataError

_LINE = re.compile(r"^\s*(?P<key>[A-Z0-9_]+)\s*=\s*(?P<value>.*?)\s*$")


def _value(text: str) -> Any:
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_mtl(text: str) -> dict[str, Any]:
    """Parse ODL/MTL text into nested dicts (GROUP -> dict); numbers become int/float."""
    root: dict[str, Any] = {}
    stack = [root]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.strip() == "END":
            continue
        m = _LINE.match(line)
        if not m:
            raise ConfigError(f"MTL line {n} is not 'KEY = VALUE': {line!r}")
        key, value = m["key"], m["value"]
        if key == "GROUP":
            child: dict[str, Any] = {}
            stack[-1][value] = child
            stack.append(child)
        elif key == "END_GROUP":
            if len(stack) == 1:
                raise ConfigError(f"MTL line {n}: END_GROUP {value} without GROUP")
            stack.pop()
        else:
            stack[-1][key] = _value(value)
    if len(stack) != 1:
        raise ConfigError("MTL text ends inside a GROUP (truncated file?)")
    return root


@dataclass(frozen=True)
class MTL:
    """The MTL fields needed for TOA reflectance, plus the parsed tree."""

    scene_id: str
    acquired: _dt.datetime
    """Scene centre time, UTC."""
    sun_elevation: float
    """Degrees above the horizon."""
    reflectance_mult: dict[int, float]
    """Band number -> REFLECTANCE_MULT_BAND_x."""
    reflectance_add: dict[int, float]
    data_type: str
    raw: dict[str, Any]

    def toa_reflectance(self, dn: np.ndarray, band: int) -> np.ndarray:
        """uint16 DN -> float32 TOA reflectance (sun-angle corrected); DN 0 (fill) -> NaN."""
        if band not in self.reflectance_mult:
            raise ConfigError(f"no reflectance coefficients for band {band}; valid: {sorted(self.reflectance_mult)}")
        q = np.asarray(dn)
        rho = (self.reflectance_mult[band] * q.astype(np.float64) + self.reflectance_add[band])
        rho /= np.sin(np.deg2rad(self.sun_elevation))
        out = rho.astype(np.float32)
        out[q == 0] = np.nan
        return out


def read_mtl(path: str | Path) -> MTL:
    """Read an ``*_MTL.txt`` file."""
    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"MTL file not found: {p}")
    tree = parse_mtl(p.read_text())
    try:
        md = tree["L1_METADATA_FILE"]
        prod, img, resc = md["PRODUCT_METADATA"], md["IMAGE_ATTRIBUTES"], md["RADIOMETRIC_RESCALING"]
        day = str(prod["DATE_ACQUIRED"])
        hms = str(prod["SCENE_CENTER_TIME"]).rstrip("Z")[:15]
        acquired = _dt.datetime.fromisoformat(f"{day}T{hms}").replace(tzinfo=_dt.UTC)
        mult = {int(k.rsplit("_", 1)[1]): float(v) for k, v in resc.items()
                if k.startswith("REFLECTANCE_MULT_BAND_")}
        add = {int(k.rsplit("_", 1)[1]): float(v) for k, v in resc.items()
               if k.startswith("REFLECTANCE_ADD_BAND_")}
        return MTL(str(md["METADATA_FILE_INFO"]["LANDSAT_SCENE_ID"]), acquired,
                   float(img["SUN_ELEVATION"]), mult, add, str(prod["DATA_TYPE"]), tree)
    except KeyError as exc:
        raise ConfigError(f"{p}: MTL lacks {exc}; is it a Landsat-8 L1 MTL?") from exc


@dataclass(frozen=True)
class L1Scene:
    """A Landsat-8 L1 scene as per-band GeoTIFFs named ``<prefix>B<n>.tif`` plus the MTL."""

    folder: Path
    mtl: MTL
    band_files: dict[str, Path]
    """``"B1"``.. ``"B7"``, ``"BQA"`` -> file."""

    def read_dn(self, band: str) -> tuple[np.ndarray, dict]:
        """(array (y, x) uint16, rasterio profile) of band ``"B4"``/``"BQA"``."""
        import rasterio

        if band not in self.band_files:
            raise MissingDataError(f"band {band!r} not in {self.folder}; present: {sorted(self.band_files)}")
        with rasterio.open(self.band_files[band]) as src:
            return src.read(1), dict(src.profile)

    def read_toa(self, band: int) -> tuple[np.ndarray, dict]:
        """(TOA reflectance float32 (y, x), NaN fill, rasterio profile) of band number ``band``."""
        dn, prof = self.read_dn(f"B{band}")
        return self.mtl.toa_reflectance(dn, band), prof


def open_scene(folder: str | Path) -> L1Scene:
    """Open a folder holding ``*_MTL.txt`` and ``*B<n>.tif`` files (e.g. the Alabama sample)."""
    f = Path(folder)
    mtls = sorted(f.glob("*MTL.txt"))
    if not mtls:
        raise MissingDataError(f"no *MTL.txt in {f}")
    bands = {}
    for p in sorted(f.glob("*.tif")):
        m = re.search(r"(B\d{1,2}|BQA)\.tif$", p.name, re.IGNORECASE)
        if m:
            bands[m.group(1).upper()] = p
    return L1Scene(f, read_mtl(mtls[0]), bands)


__all__ = ["MTL", "L1Scene", "open_scene", "parse_mtl", "read_mtl"]
