"""On-disk training pairs (30 m input, 10 m target, aux layers): the pairs store format.

Format (full spec in docs/PAIRS.md): **one Zarr v2 store with a ``pair`` dimension**, every
pair a chip of fixed size (``chip_size`` 30 m cells, default 20; target 3x that), chunked one
pair per chunk, consolidated metadata. It opens the same way from a local path and from
``s3://bucket/key`` (xarray + zarr + s3fs), a training worker reads only the chunks of its
own pairs, and new pairs are appended along ``pair``.

Per pair (units as docs/ARCHITECTURE.md; the variable table is in docs/PAIRS.md): ``lr`` (band,
y_lr, x_lr) 30 m and ``hr`` (band, y, x) 10 m reflectance in OUTPUT_BANDS order (NaN invalid) with
``lr_valid`` / ``hr_valid`` masks; aux ``dem`` (m), ``landcover`` (class index), ``sar`` (pol, y, x;
dB) with ``present`` flags in :data:`AUX` order; ``hr_res`` (m per target band); ``crs``,
``transform`` / ``lr_transform`` (GDAL-order affines, same origin); ``lr_date`` / ``hr_date``;
``sensor_pair`` (:data:`SENSOR_PAIRS`); ``location`` (the unit of the train / held-out split,
:func:`location_from_folder`);
plus strings ``lr_bands``, ``hr_bands``, ``band_adjust``, ``source`` and float
``psf_sigma`` (10 m pixels; NaN for real pairs). Reflectance is stored as int16 x 1e-4
(fill -9999), SAR as int16 x 0.01 dB (fill -32768); xarray decodes both to floats.
:mod:`lssr_ray.data.pairs_convert` makes stores from WorldCereal samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import psf as _psf
from lssr_ray.data.blockgrid import SCALE
from lssr_ray.errors import ConfigError, MissingDataError
from lssr_ray.fileio import filesystem, is_remote, settings_for

FORMAT = "lssr-pairs"
FORMAT_VERSION = 1
DEFAULT_CHIP_SIZE = 20
"""Default stored chip edge in 30 m cells (the Flanders patch holds 20 x 21 whole cells)."""
SENSOR_PAIRS = ("L8-S2", "S2deg-S2")
"""``L8-S2``: real Landsat-8 input, Sentinel-2 target; ``S2deg-S2``: S2 degraded by psf.degrade."""
AUX = ("dem", "landcover", "sar")
"""Order of the ``present`` flags (docs/ARCHITECTURE.md)."""
SAR_POLS = ("VV", "VH")

_REFL_ENC = {"dtype": "int16", "scale_factor": 1e-4, "_FillValue": -9999}
_SAR_ENC = {"dtype": "int16", "scale_factor": 0.01, "_FillValue": -32768}


# ----------------------------------------------------------------------------- one pair
@dataclass
class Pair:
    """One training pair in memory (numpy, no batch dim). h, w = chip size in 30 m cells."""

    pair_id: str
    """Unique id, e.g. ``"00002806639B424A_L8-S2_20180802_20180802_r00c00"``."""
    lr: np.ndarray
    """(6, h, w) float32 30 m reflectance, OUTPUT_BANDS order, NaN invalid."""
    lr_valid: np.ndarray
    """(h, w) bool."""
    hr: np.ndarray
    """(6, 3h, 3w) float32 10 m target reflectance, NaN invalid."""
    hr_valid: np.ndarray
    """(3h, 3w) bool."""
    crs: str
    """CRS of both grids, e.g. ``"EPSG:32631"``."""
    transform: tuple[float, ...]
    """10 m grid affine (a, b, c, d, e, f); the 30 m grid has the same origin and 3x pixels."""
    lr_date: np.datetime64
    hr_date: np.datetime64
    sensor_pair: str
    """One of :data:`SENSOR_PAIRS`."""
    source: str
    """Source file names, ``;``-separated."""
    lr_bands: str
    """Source band ids of lr in OUTPUT_BANDS order, e.g. ``"L8:B04,B03,B02,B05,B06,B07"``."""
    hr_bands: str
    """Source band ids of hr, e.g. ``"S2:B04,B03,B02,B08,B11,B12"``."""
    hr_res: tuple[float, ...] = (10.0, 10.0, 10.0, 10.0, 20.0, 20.0)
    """Native resolution (m) of each hr band's source (20 m bands are bilinear-upsampled)."""
    band_adjust: str = "none"
    """MSI -> OLI adjustment applied to S2-derived reflectance (``psf.BANDPASS_CHOICES``)."""
    psf_sigma: float = float("nan")
    """Gaussian PSF sigma in 10 m pixels used for synthetic lr; NaN for real pairs."""
    dem: np.ndarray | None = None
    """(3h, 3w) float32 metres, or None."""
    landcover: np.ndarray | None = None
    """(3h, 3w) int class index, 0 unknown, or None."""
    sar: np.ndarray | None = None
    """(2, 3h, 3w) float32 VV, VH dB, or None."""
    location: str = ""
    """Stable site id (:func:`location_from_folder` of the source folder); "" = derive from the id."""

    @property
    def lr_transform(self) -> tuple[float, ...]:
        a, b, c, d, e, f = self.transform
        return (a * SCALE, b * SCALE, c, d * SCALE, e * SCALE, f)

    def validate(self) -> None:
        """Raise ConfigError if shapes, ids or choices are inconsistent."""
        nb = len(OUTPUT_BANDS)
        if self.lr.ndim != 3 or self.lr.shape[0] != nb:
            raise ConfigError(f"{self.pair_id}: lr must be ({nb}, h, w), got {self.lr.shape}")
        h, w = self.lr.shape[1:]
        H, W = h * SCALE, w * SCALE
        want = {"lr_valid": (h, w), "hr": (nb, H, W), "hr_valid": (H, W), "dem": (H, W),
                "landcover": (H, W), "sar": (len(SAR_POLS), H, W)}
        for name, shape in want.items():
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != shape:
                raise ConfigError(f"{self.pair_id}: {name} must have shape {shape} (3x the lr grid), got {v.shape}")
        if self.sensor_pair not in SENSOR_PAIRS:
            raise ConfigError(f"{self.pair_id}: sensor_pair {self.sensor_pair!r}; valid: {SENSOR_PAIRS}")
        if self.band_adjust not in _psf.BANDPASS_CHOICES:
            raise ConfigError(f"{self.pair_id}: band_adjust {self.band_adjust!r}; valid: {_psf.BANDPASS_CHOICES}")
        if len(self.transform) != 6:
            raise ConfigError(f"{self.pair_id}: transform must be 6 affine coefficients, got {self.transform}")


_SOURCE_PREFIXES = ("worldcereal_", "landsat8_l1t_", "landsat8_", "hls_")


def location_from_folder(name: str) -> str:
    """Stable site id of a sample folder: the folder name without its source prefix and without
    ``monthly`` (``worldcereal_hesbaye_monthly_2021`` -> ``hesbaye_2021``,
    ``worldcereal_flanders_31UDS_2018`` -> ``flanders_31UDS_2018``). Pairs of one location share
    fields and dates, so the train / held-out split is made by location, never by date."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", Path(name).name).strip("_")
    for pre in _SOURCE_PREFIXES:
        if s.lower().startswith(pre):
            s = s[len(pre):]
            break
    return "_".join(w for w in s.split("_") if w.lower() != "monthly") or s


def _folder_of_patch_id(patch_id: str) -> str | None:
    """Bundled sample folder holding files named after ``patch_id`` (WorldCereal patch ids)."""
    from lssr_ray.data.samples import SAMPLES_DIR

    if not SAMPLES_DIR.is_dir() or not re.fullmatch(r"[A-Za-z0-9-]+", patch_id):
        return None
    hits = sorted({f.parent.name for f in SAMPLES_DIR.glob(f"*/*{patch_id}*")})
    return hits[0] if len(hits) == 1 else None


def location_from_pair_id(pair_id: str) -> str:
    """Location of a pair from its id alone (stores written before ``location`` existed): the
    part before the sensor-pair tag, mapped through the bundled sample folder that holds that
    patch id (``00002806639B424A`` -> ``flanders_31UDS_2018``) or, for a folder-derived id
    (``worldcereal-hesbaye-monthly-2021``), through :func:`location_from_folder`."""
    head = re.split(r"_(?:{})_".format("|".join(re.escape(k) for k in SENSOR_PAIRS)), pair_id, maxsplit=1)[0]
    folder = _folder_of_patch_id(head)
    return location_from_folder(folder or head)


def pair_locations(ds) -> list[str]:
    """Location of every pair of an opened store, in store order (derived from the pair ids
    for stores written before the ``location`` variable existed)."""
    if "location" in ds.variables:
        return [str(x) for x in ds["location"].values.tolist()]
    cache: dict[str, str] = {}
    out = []
    for pid in pair_ids(ds):
        head = pid.split("_", 1)[0]
        if head not in cache:
            cache[head] = location_from_pair_id(pid)
        out.append(cache[head])
    return out


def _obj(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def pairs_to_dataset(pairs: Sequence[Pair]):
    """Stack pairs of one chip size into an ``xarray.Dataset`` with a ``pair`` dimension."""
    import xarray as xr

    if not pairs:
        raise ConfigError("no pairs to write")
    for p in pairs:
        p.validate()
    shapes = {p.lr.shape for p in pairs}
    if len(shapes) != 1:
        raise ConfigError(f"all pairs in one store must share the chip size; got lr shapes {sorted(shapes)}")
    ids = [p.pair_id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"duplicate pair ids: {dup[:5]}")
    _, h, w = pairs[0].lr.shape
    H, W = h * SCALE, w * SCALE

    def stack(name, shape, fill, dtype):
        out = np.full((len(pairs), *shape), fill, dtype=dtype)
        for i, p in enumerate(pairs):
            v = getattr(p, name)
            if v is not None:
                out[i] = v
        return out

    def refl(a):  # int16 range guard: values are reflectance, |x| < 3.27 always in practice
        return np.clip(a, -3.2, 3.2)

    lr = refl(stack("lr", (6, h, w), np.nan, np.float32))
    lr_valid = stack("lr_valid", (h, w), False, bool)
    lr[~np.broadcast_to(lr_valid[:, None], lr.shape)] = np.nan
    hr = refl(stack("hr", (6, H, W), np.nan, np.float32))
    hr_valid = stack("hr_valid", (H, W), False, bool)
    hr[~np.broadcast_to(hr_valid[:, None], hr.shape)] = np.nan
    dem = stack("dem", (H, W), np.nan, np.float32)
    lc = stack("landcover", (H, W), 0, np.int16)
    sar = stack("sar", (2, H, W), np.nan, np.float32)
    present = np.array([[p.dem is not None and bool(np.isfinite(p.dem).any()),
                         p.landcover is not None and bool((np.asarray(p.landcover) != 0).any()),
                         p.sar is not None and bool(np.isfinite(p.sar).any())] for p in pairs], np.uint8)
    P = ("pair",)
    ds = xr.Dataset(
        {
            "lr": (P + ("band", "y_lr", "x_lr"), lr),
            "lr_valid": (P + ("y_lr", "x_lr"), lr_valid.astype(np.uint8)),
            "hr": (P + ("band", "y", "x"), hr),
            "hr_valid": (P + ("y", "x"), hr_valid.astype(np.uint8)),
            "dem": (P + ("y", "x"), dem, {"units": "m"}),
            "landcover": (P + ("y", "x"), lc, {"description": "class index, lssr_ray/data/landcover_classes.csv; 0 unknown"}),
            "sar": (P + ("pol", "y", "x"), sar, {"units": "dB"}),
            "present": (P + ("aux",), present),
            "hr_res": (P + ("band",), np.array([p.hr_res for p in pairs], np.float32), {"units": "m"}),
            "crs": (P, _obj(p.crs for p in pairs)),
            "transform": (P + ("affine",), np.array([p.transform for p in pairs], np.float64)),
            "lr_transform": (P + ("affine",), np.array([p.lr_transform for p in pairs], np.float64)),
            "lr_date": (P, np.array([p.lr_date for p in pairs], "datetime64[ns]")),
            "hr_date": (P, np.array([p.hr_date for p in pairs], "datetime64[ns]")),
            "sensor_pair": (P, _obj(p.sensor_pair for p in pairs)),
            "location": (P, _obj(p.location or location_from_pair_id(p.pair_id) for p in pairs)),
            "lr_bands": (P, _obj(p.lr_bands for p in pairs)),
            "hr_bands": (P, _obj(p.hr_bands for p in pairs)),
            "band_adjust": (P, _obj(p.band_adjust for p in pairs)),
            "source": (P, _obj(p.source for p in pairs)),
            "psf_sigma": (P, np.array([p.psf_sigma for p in pairs], np.float32)),
        },
        coords={"pair": _obj(ids), "band": list(OUTPUT_BANDS), "pol": list(SAR_POLS), "aux": list(AUX)},
        attrs={"format": FORMAT, "format_version": FORMAT_VERSION, "scale": SCALE,
               "chip_size": int(h), "spec": "docs/PAIRS.md"},
    )
    return ds


_META_CHUNK = 4096
"""Pairs per chunk of the small per-pair variables (dates, CRS, transforms, strings)."""


def _compressor():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=6, shuffle=Blosc.BITSHUFFLE)


def _encoding(ds) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if "pair" not in var.dims:
            continue
        # image arrays: one pair per chunk (a worker reads only its pairs); per-pair
        # metadata: one chunk for many pairs (a few files instead of one per pair and variable)
        spatial = bool({"y", "y_lr"} & set(var.dims))
        n = 1 if spatial else _META_CHUNK
        chunks = tuple(n if d == "pair" else ds.sizes[d] for d in var.dims)
        e: dict[str, Any] = {"chunks": chunks}
        if spatial:
            e["compressors"] = (_compressor(),)
        if name in ("lr", "hr"):
            e.update(_REFL_ENC)
        elif name == "sar":
            e.update(_SAR_ENC)
        elif name in ("lr_date", "hr_date"):
            e.update({"units": "seconds since 1970-01-01", "dtype": "int64"})
        enc[name] = e
    return enc


def write_pairs(
    pairs: Sequence[Pair],
    out: str | Path,
    *,
    mode: str = "w",
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write ``pairs`` to the Zarr store ``out`` (local path or ``s3://``); returns the count.

    ``mode="w"`` replaces the store; ``"a"`` appends along ``pair`` (chip size must match the
    store's, ids must be new).
    """
    import zarr

    if mode not in ("w", "a"):
        raise ConfigError(f"mode must be 'w' (replace) or 'a' (append), got {mode!r}")
    ds = pairs_to_dataset(pairs)
    url = str(out)
    if mode == "a" and _exists(url, storage_options):
        old = open_pairs(url, storage_options=storage_options)
        if old.attrs["chip_size"] != ds.attrs["chip_size"]:
            raise ConfigError(f"{url} holds chips of {old.attrs['chip_size']} cells; "
                              f"cannot append chips of {ds.attrs['chip_size']}")
        clash = sorted(set(old["pair"].values.tolist()) & set(ds["pair"].values.tolist()))
        if clash:
            raise ConfigError(f"pair ids already in {url}: {clash[:5]}")
        if "location" not in old.variables:  # a store written before locations: keep its layout
            ds = ds.drop_vars("location")
        ds.drop_vars(["band", "pol", "aux"]).to_zarr(
            url, mode="a", append_dim="pair", zarr_format=2, consolidated=True, storage_options=settings_for(url, storage_options) or None)
    else:
        ds.to_zarr(url, mode="w", encoding=_encoding(ds), zarr_format=2, consolidated=True,
                   storage_options=settings_for(url, storage_options) or None)
    zarr.consolidate_metadata(_store(url, storage_options))
    return len(pairs)


def _store(url: str, storage_options: dict[str, Any] | None):
    if is_remote(url):
        fs, path = filesystem(url, storage_options)
        return fs.get_mapper(path)
    return url


def _exists(url: str, storage_options: dict[str, Any] | None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.isfile(path.rstrip("/") + "/.zattrs")


def open_pairs(store: str | Path, *, storage_options: dict[str, Any] | None = None):
    """Open a pairs store lazily (``xarray.Dataset``, dask-free lazy arrays), local or ``s3://``.

    Raises MissingDataError when nothing is there and ConfigError when it is not a pairs store.
    """
    import xarray as xr

    url = str(store)
    if not _exists(url, storage_options):
        raise MissingDataError(f"no pairs store at {url} (expected a Zarr v2 store with .zattrs; see docs/PAIRS.md)")
    ds = xr.open_zarr(_store(url, storage_options), consolidated=True, chunks=None)
    if ds.attrs.get("format") != FORMAT:
        raise ConfigError(f"{url} is not a {FORMAT} store (format attr {ds.attrs.get('format')!r})")
    if int(ds.attrs.get("format_version", -1)) > FORMAT_VERSION:
        raise ConfigError(f"{url} has format_version {ds.attrs['format_version']}; this code reads <= {FORMAT_VERSION}")
    return ds


def pair_ids(ds) -> list[str]:
    """Pair ids of an opened store, in store order (plain Python strings)."""
    return [str(x) for x in ds["pair"].values.tolist()]


def read_pair(ds, index: int) -> dict[str, Any]:
    """Decode pair ``index`` of an opened store into numpy (batch-contract units, no batch dim).

    Keys: ``pair_id``, ``lr`` (6,h,w) f32, ``lr_valid`` (h,w) bool, ``hr`` (6,3h,3w) f32,
    ``hr_valid`` (3h,3w) bool, ``dem`` (1,3h,3w) f32, ``landcover`` (1,3h,3w) int64,
    ``sar`` (2,3h,3w) f32, ``present`` (3,) f32, ``month`` int (of lr_date), ``crs``,
    ``transform``, ``lr_transform`` (6-tuples), ``lr_date``, ``hr_date``, ``sensor_pair``.
    """
    n = ds.sizes["pair"]
    if not 0 <= index < n:
        raise ConfigError(f"pair index {index} out of range [0, {n})")
    p = ds.isel(pair=index).load()
    lr_valid = p["lr_valid"].values.astype(bool)
    hr_valid = p["hr_valid"].values.astype(bool)
    lr = p["lr"].values.astype(np.float32)
    hr = p["hr"].values.astype(np.float32)
    lr[:, ~lr_valid] = np.nan
    hr[:, ~hr_valid] = np.nan
    lr_date = p["lr_date"].values
    return {
        "pair_id": str(p["pair"].values), "lr": lr, "lr_valid": lr_valid, "hr": hr, "hr_valid": hr_valid,
        "dem": p["dem"].values.astype(np.float32)[None], "landcover": p["landcover"].values.astype(np.int64)[None],
        "sar": p["sar"].values.astype(np.float32), "present": p["present"].values.astype(np.float32),
        "month": int(np.datetime64(lr_date, "M").astype(int) % 12 + 1),
        "crs": str(p["crs"].values), "transform": tuple(p["transform"].values.tolist()),
        "lr_transform": tuple(p["lr_transform"].values.tolist()),
        "lr_date": lr_date, "hr_date": p["hr_date"].values, "sensor_pair": str(p["sensor_pair"].values),
    }


__all__ = ["AUX", "DEFAULT_CHIP_SIZE", "FORMAT", "FORMAT_VERSION", "SAR_POLS", "SENSOR_PAIRS", "Pair",
           "location_from_folder", "location_from_pair_id", "open_pairs", "pair_ids", "pair_locations",
           "pairs_to_dataset", "read_pair", "write_pairs"]
