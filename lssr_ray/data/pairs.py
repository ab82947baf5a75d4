"""On-disk training pairs (30 m input, 10 m target, aux layers) and the WorldCereal converter.

Format (full spec in docs/PAIRS.md): **one Zarr v2 store with a ``pair`` dimension**, every
pair a chip of fixed size (``chip_size`` 30 m cells, default 20; target 3x that), chunked one
pair per chunk, consolidated metadata. It opens the same way from a local path and from
``s3://bucket/key`` (xarray + zarr + s3fs), a training worker reads only the chunks of its
own pairs, and new pairs are appended along ``pair``.

Per pair (units as docs/ARCHITECTURE.md):

========== ========================== ==================================================
variable   dims                       meaning
========== ========================== ==================================================
lr         pair, band, y_lr, x_lr     30 m reflectance, OUTPUT_BANDS order, NaN invalid
lr_valid   pair, y_lr, x_lr           1 where all six lr bands are clear and valid
hr         pair, band, y, x           10 m target reflectance, NaN invalid
hr_valid   pair, y, x                 1 where the target is clear and valid
dem        pair, y, x                 metres, NaN missing
landcover  pair, y, x                 class index (landcover_classes.csv), 0 unknown
sar        pair, pol, y, x            Sentinel-1 sigma0 VV, VH in dB, NaN missing
present    pair, aux                  1 where dem / landcover / sar exist
hr_res     pair, band                 native resolution (m) of each target band's source
crs        pair                       CRS string (``EPSG:32631``)
transform  pair, affine               10 m grid affine (a, b, c, d, e, f) = GDAL order
lr_transform pair, affine             30 m grid affine (same origin)
lr_date, hr_date  pair                acquisition times (UTC, datetime64)
sensor_pair pair                      ``"L8-S2"`` (real) or ``"S2deg-S2"`` (synthetic)
location   pair                       stable site id (``flanders_31UDS_2018``): the unit of the
                                      train / held-out split (:func:`location_from_folder`)
========== ========================== ==================================================

plus strings ``lr_bands``, ``hr_bands``, ``band_adjust``, ``source`` and float
``psf_sigma`` (10 m pixels; NaN for real pairs). Reflectance is stored as int16 x 1e-4
(fill -9999), SAR as int16 x 0.01 dB (fill -32768); xarray decodes both to floats.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import psf as _psf
from lssr_ray.errors import ConfigError, MissingDataError
from lssr_ray.fileio import filesystem, is_remote, settings_for

FORMAT = "lssr-pairs"
FORMAT_VERSION = 1
SCALE = 3
"""10 m pixels per 30 m cell along each axis."""
DEFAULT_CHIP_SIZE = 20
"""Default stored chip edge in 30 m cells (the Flanders patch holds 20 x 21 whole cells)."""
SENSOR_PAIRS = ("L8-S2", "S2deg-S2")
"""``L8-S2``: real Landsat-8 input, Sentinel-2 target; ``S2deg-S2``: S2 degraded by psf.degrade."""
AUX = ("dem", "landcover", "sar")
"""Order of the ``present`` flags (docs/ARCHITECTURE.md)."""
SAR_POLS = ("VV", "VH")
NIR_CHOICES = ("B08", "B8A")
LANDCOVER_CSV = Path(__file__).with_name("landcover_classes.csv")

_REFL_ENC = {"dtype": "int16", "scale_factor": 1e-4, "_FillValue": -9999}
_SAR_ENC = {"dtype": "int16", "scale_factor": 0.01, "_FillValue": -32768}
_REFL_RANGE = (-0.01, 1.6)
"""Reflectance outside this range is treated as invalid (HLS valid DN range -100..16000)."""


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


# ----------------------------------------------------------------------------- converter
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


def _day(t) -> _dt.date:
    return np.datetime64(t, "D").astype(_dt.date)


def _tile_offsets(n: int, chip: int, stride: int | None = None) -> list[int]:
    """Chip origins along an axis of n cells. Default: round(n / chip) chips, evenly spread,
    overlapping. With ``stride``: 0, stride, 2 stride, ... as long as the chip fits (evaluation
    chips whose scored cores, chip minus a halo, tile the area without overlap)."""
    if stride is not None:
        return list(range(0, n - chip + 1, stride))
    k = max(1, round(n / chip))
    if k == 1:
        return [0]
    return sorted({round(i * (n - chip) / (k - 1)) for i in range(k)})


def _nn_phase(arr: np.ndarray) -> tuple[tuple[int, int], float]:
    """Row/column offset of the 3x3 blocks in a nearest-neighbour 30 -> 10 m copy (t, y, x)."""
    best, score = (0, 0), -1.0
    for r in range(SCALE):
        for c in range(SCALE):
            h = (arr.shape[-2] - r) // SCALE * SCALE
            w = (arr.shape[-1] - c) // SCALE * SCALE
            b = arr[..., r:r + h, c:c + w].reshape(arr.shape[:-2] + (h // SCALE, SCALE, w // SCALE, SCALE))
            s = float(np.mean(b == b[..., :1, :, :1]))
            if s > score:
                best, score = (r, c), s
    return best, score


def _resample(arr: np.ndarray, src_transform, dst_transform, shape, crs, *, method: str) -> np.ndarray:
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


def _crs_string(da) -> str:
    crs = da.rio.crs
    if crs is None:
        raise MissingDataError("layer has no CRS (no spatial_ref/crs grid mapping)")
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@dataclass
class _Settings:
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


def _patch_id(folder: Path, ds) -> str:
    return str(ds.attrs.get("location_id") or re.sub(r"[^A-Za-z0-9]+", "-", folder.name))


def _nearest(times: np.ndarray, t, max_days: int) -> int | None:
    if times.size == 0:
        return None
    d = np.abs((times - np.datetime64(t)).astype("timedelta64[s]").astype(np.float64)) / 86400.0
    i = int(np.argmin(d))
    return i if d[i] <= max_days + 0.5 else None


def _convert_patch(folder: Path, st: _Settings, rep: ConversionReport) -> list[Pair]:
    """Pairs from one WorldCereal training patch (L8_SR_10m / S2_L2A_10m / _20m / S1 / labels / dem)."""
    from lssr_ray.data import masks
    from lssr_ray.data import worldcereal as wc

    patch = wc.open_patch(folder)
    name = folder.name
    if "s2_10m" not in patch.files:
        rep.skip(name, "no S2_L2A_10m file: no 10 m target (a 20 m-only patch cannot give 10 m truth)")
        return []
    if "s2_20m" not in patch.files:
        rep.skip(name, "no S2_L2A_20m file: SCL clear mask and B11/B12 targets are missing")
        return []
    s10 = patch.s2_10m.load()  # small patches: one read instead of one per date and band
    s20 = wc.open_nc(patch.files["s2_20m"], mask_and_scale=False).load()
    pid = _patch_id(folder, s10)
    crs = _crs_string(s10)
    t10 = s10.rio.transform()
    t20 = s20.rio.transform()
    H0, W0 = s10.sizes["y"], s10.sizes["x"]
    if not np.array_equal(s10["timestamp"].values, s20["timestamp"].values):
        rep.skip(name, "S2_L2A_10m and S2_L2A_20m timestamps differ; cannot pair SCL with 10 m bands")
        return []
    s2_times = s10["timestamp"].values
    needed_10 = ["B04", "B03", "B02"] + (["B08"] if st.nir == "B08" else [])
    needed_20 = ["B11", "B12", "SCL"] + (["B8A"] if st.nir == "B8A" else [])
    miss = [b for b in needed_10 if b not in s10] + [b for b in needed_20 if b not in s20]
    if miss:
        rep.skip(name, f"S2 bands missing for the 10 m target: {miss}")
        return []

    # 30 m lattice: the block phase of the L8 nearest-neighbour copy, else the patch origin
    l8 = None
    phase = (0, 0)
    if "l8" in patch.files:
        l8_raw = wc.open_nc(patch.files["l8"], mask_and_scale=False)[["pixel_qa"]].load()
        dn = {c: wc.l8_reflectance_int16(patch, b).values for c, b in _psf.L8_BANDS.items()}
        phase, score = _nn_phase(dn["red"])
        if score < 0.95:
            rep.skip(f"{name}/L8", f"L8 layer is not a 3x3 nearest-neighbour copy of a 30 m grid (best block agreement {score:.2f})")
            phase = (0, 0)
        else:
            l8 = (l8_raw, dn)
            rep.notes.append(f"{name}: L8 30 m cells start at 10 m pixel (row {phase[0]}, col {phase[1]}); agreement {score:.3f}")
    elif st.real:
        rep.skip(f"{name}/real", "no L8_SR_10m file: no real pairs")
    r0, c0 = phase
    nr, nc = (H0 - r0) // SCALE, (W0 - c0) // SCALE
    cs = st.chip_size
    if nr < cs or nc < cs:
        rep.skip(name, f"patch holds {nr}x{nc} whole 30 m cells, fewer than chip_size {cs}")
        return []
    chips = [(a, b) for a in _tile_offsets(nr, cs, st.chip_stride) for b in _tile_offsets(nc, cs, st.chip_stride)]

    def win(a, b):  # 10 m slices of chip (a, b)
        ys, xs = r0 + a * SCALE, c0 + b * SCALE
        return slice(ys, ys + cs * SCALE), slice(xs, xs + cs * SCALE)

    def chip_transform(a, b):
        t = t10 @ Affine.translation(c0 + b * SCALE, r0 + a * SCALE)
        return (t.a, t.b, t.c, t.d, t.e, t.f)

    # static aux on the full 10 m patch grid
    dem = None
    if patch.dem is not None:
        d = patch.dem
        dem = _resample(d.values, d.rio.transform(), t10, (H0, W0), crs, method="bilinear")
    else:
        rep.skip(f"{name}/dem", "no dem_*.tif in the patch folder")
    lc = None
    if "labels" in patch.files:
        if st.lc_lookup is None:
            rep.skip(f"{name}/landcover", f"{LANDCOVER_CSV.name} not found: LC codes cannot be mapped to class indices")
        else:
            codes = wc.open_nc(patch.files["labels"], mask_and_scale=False)["LC"].values.astype(np.int64)
            lc = np.vectorize(lambda c: st.lc_lookup.get(int(c), 0), otypes=[np.int16])(codes)
            unknown = sorted(set(np.unique(codes).tolist()) - set(st.lc_lookup) - {0})
            if unknown:
                rep.notes.append(f"{name}: LC codes {unknown} not in {LANDCOVER_CSV.name} -> 0 (unknown)")
    else:
        rep.skip(f"{name}/landcover", "no OUTPUT_POLY labels file")
    s1 = patch.s1
    if s1 is not None:
        s1 = s1.load()
    else:
        rep.skip(f"{name}/sar", "no S1_GRD file")

    # whole time stacks resampled once (one rasterio call per layer group, not per date)
    up20 = {}
    for bname in [b for b in needed_20 if b != "SCL"]:
        v = s20[bname].values.astype(np.float32)
        v[v == 0] = np.nan  # _FillValue 0
        up20[bname] = _resample(v * np.float32(1e-4), t20, t10, (H0, W0), crs, method="bilinear")
    scl10 = _resample(s20["SCL"].values.astype(np.float32), t20, t10, (H0, W0), crs, method="nearest")
    clear10 = masks.clear_from_scl(np.nan_to_num(scl10).astype(np.uint8))
    s1_10 = None
    if s1 is not None:
        v = np.stack([s1[p].values for p in SAR_POLS], axis=1).astype(np.float32)  # (t, pol, y, x)
        s1_10 = _resample(v, s1.rio.transform(), t10, (H0, W0), crs, method="bilinear")

    def s2_target(i: int):  # full-patch 10 m target (6, H0, W0) and validity, band-adjusted
        stack = [s10[b].values[i].astype(np.float32) for b in ("B04", "B03", "B02")]
        stack.append(s10["B08"].values[i].astype(np.float32) if st.nir == "B08" else up20["B8A"][i])
        stack += [up20["B11"][i], up20["B12"][i]]
        hr = _psf.adjust_bandpass(np.stack(stack), st.band_adjust)
        ok = clear10[i] & np.all(np.isfinite(hr) & (hr >= _REFL_RANGE[0]) & (hr <= _REFL_RANGE[1]), axis=0)
        return hr, ok

    def sar_for(t):
        if s1_10 is None:
            return None, ""
        j = _nearest(s1["timestamp"].values, t, st.max_sar_gap_days)
        if j is None:
            return None, ""
        return s1_10[j], patch.files["s1"].name

    hr_res = (10.0, 10.0, 10.0, 10.0 if st.nir == "B08" else 20.0, 20.0, 20.0)
    hr_bands = f"S2:B04,B03,B02,{st.nir},B11,B12"
    base_src = [patch.files["s2_10m"].name, patch.files["s2_20m"].name]
    if "dem" in patch.files:
        base_src.append(patch.files["dem"].name)
    if lc is not None:
        base_src.append(patch.files["labels"].name)

    def make(kind, a, b, lr, lr_valid, hr, hr_valid, lr_t, hr_t, sar, extra_src, sigma, lr_bands):
        ys, xs = win(a, b)
        sensor = "L8-S2" if kind == "real" else "S2deg-S2"
        pid_ = f"{pid}_{sensor}_{_day(lr_t):%Y%m%d}_{_day(hr_t):%Y%m%d}_r{a:02d}c{b:02d}"
        return Pair(
            pair_id=pid_, lr=lr, lr_valid=lr_valid, hr=hr[:, ys, xs], hr_valid=hr_valid[ys, xs], crs=crs,
            transform=chip_transform(a, b), lr_date=np.datetime64(lr_t, "ns"), hr_date=np.datetime64(hr_t, "ns"),
            sensor_pair=sensor, source=";".join(base_src + extra_src), lr_bands=lr_bands, hr_bands=hr_bands,
            hr_res=hr_res, band_adjust=st.band_adjust, psf_sigma=sigma,
            dem=None if dem is None else dem[ys, xs], landcover=None if lc is None else lc[ys, xs],
            sar=None if sar is None else sar[:, ys, xs], location=location_from_folder(folder.resolve().name),
        )

    out: dict[str, Pair] = {}
    # (a) real pairs: clear L8 date + clear S2 within max_date_gap_days
    if l8 is not None and st.real:
        l8_raw, dn = l8
        qa = l8_raw["pixel_qa"].values
        for k, t in enumerate(l8_raw["timestamp"].values):
            cand = [i for i, ts in enumerate(s2_times)
                    if abs((_day(ts) - _day(t)).days) <= st.max_date_gap_days]
            tag = f"{name}/L8 {_day(t)}"
            if not cand:
                rep.skip(tag, f"no S2 date within {st.max_date_gap_days} d")
                continue
            cand.sort(key=lambda i: (abs((_day(s2_times[i]) - _day(t)).days), -float(s2_target(i)[1].mean())))
            i = cand[0]
            hr, ok = s2_target(i)
            sar, sar_src = sar_for(t)
            for a, b in chips:
                ys, xs = win(a, b)
                cell = (slice(ys.start + 1, ys.stop, SCALE), slice(xs.start + 1, xs.stop, SCALE))  # block centres
                lr_dn = np.stack([dn[c][k][cell] for c in OUTPUT_BANDS]).astype(np.float32)
                lr_ok = masks.clear_from_pixel_qa(qa[k][cell]) & np.all(
                    (lr_dn >= _REFL_RANGE[0] * 1e4) & (lr_dn <= _REFL_RANGE[1] * 1e4), axis=0)
                lc_frac, hc_frac = float(lr_ok.mean()), float(ok[ys, xs].mean())
                ctag = f"{tag} / S2 {_day(s2_times[i])} chip r{a:02d}c{b:02d}"
                if lc_frac < st.min_clear or hc_frac < st.min_clear:
                    rep.skip(ctag, f"clear fraction L8 {lc_frac:.2f}, S2 {hc_frac:.2f} < min_clear {st.min_clear}")
                    continue
                lr = lr_dn * np.float32(1e-4)
                p = make("real", a, b, lr, lr_ok, hr, ok, t, s2_times[i], sar,
                         [patch.files["l8"].name] + ([sar_src] if sar_src else []), float("nan"),
                         "L8:" + ",".join(_psf.L8_BANDS[c] for c in OUTPUT_BANDS))
                old = out.get(p.pair_id)  # two L8 entries on one day: keep the clearer one
                if old is None or old.lr_valid.mean() < p.lr_valid.mean():
                    out[p.pair_id] = p
    # (b) synthetic pairs: every clear S2 date, degraded to 30 m
    if st.synthetic:
        n_cloudy = 0
        for i, t in enumerate(s2_times):
            hr, ok = s2_target(i)
            sar, sar_src = sar_for(t)
            for a, b in chips:
                ys, xs = win(a, b)
                if float(ok[ys, xs].mean()) < st.min_clear:
                    n_cloudy += 1
                    continue
                lr, lr_ok, sigma = _psf.degrade(hr[:, ys, xs], SCALE, mtf_at_nyquist=st.mtf_at_nyquist, valid=ok[ys, xs])
                p = make("synthetic", a, b, lr, lr_ok, hr, ok, t, t, sar, [sar_src] if sar_src else [], sigma,
                         "S2deg:" + hr_bands.split(":", 1)[1])
                out[p.pair_id] = p
        if n_cloudy:
            rep.skip(f"{name}/synthetic", f"{n_cloudy} of {len(s2_times) * len(chips)} S2 date-chips below min_clear {st.min_clear}")
    return list(out.values())


_MONTHLY_VAR = re.compile(r"^S2-L2A-B(02|03|04|08|8A|11|12)$")


def _is_monthly_cube(path: Path) -> bool:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            return any(_MONTHLY_VAR.match(v) for v in nc.variables)
    except OSError:
        return False


def _convert_monthly(path: Path, st: _Settings, rep: ConversionReport) -> list[Pair]:
    """Synthetic pairs from an openEO monthly cube (``S2-L2A-B*``, ``S1-SIGMA0-*``, ``elevation``)."""
    from lssr_ray.data import worldcereal as wc

    ds = wc.open_monthly_inputs(path)
    tag = f"{path.parent.name}/{path.name}"
    if not st.synthetic:
        rep.skip(tag, "monthly composites give synthetic pairs only, and synthetic=False")
        return []
    bands = {"red": "B04", "green": "B03", "blue": "B02", "nir": st.nir, "swir1": "B11", "swir2": "B12"}
    miss = [b for b in bands.values() if f"S2-L2A-{b}" not in ds]
    if miss:
        rep.skip(tag, f"S2 bands missing for the 10 m target: {miss} (nir={st.nir!r}; valid choices {NIR_CHOICES})")
        return []
    crs = _crs_string(ds)
    t10 = ds.rio.transform()
    H0, W0 = ds.sizes["y"], ds.sizes["x"]
    nr, nc = H0 // SCALE, W0 // SCALE
    cs = st.chip_size
    if nr < cs or nc < cs:
        rep.skip(tag, f"cube holds {nr}x{nc} whole 30 m cells, fewer than chip_size {cs}")
        return []
    chips = [(a, b) for a in _tile_offsets(nr, cs, st.chip_stride) for b in _tile_offsets(nc, cs, st.chip_stride)]
    tdim = "t" if "t" in ds.dims else "timestamp"
    dem_all = ds["elevation"].values if "elevation" in ds else None
    if dem_all is None:
        rep.skip(f"{tag}/dem", "no elevation variable")
    has_sar = all(f"S1-SIGMA0-{p}" in ds for p in SAR_POLS)
    if not has_sar:
        rep.skip(f"{tag}/sar", "no S1-SIGMA0-VV/VH variables")
    rep.skip(f"{tag}/landcover", "the monthly cube has no land-cover layer")
    # openEO resamples B11/B12 (20 m) onto the 10 m grid; record their native resolution
    hr_res = (10.0, 10.0, 10.0, 10.0 if st.nir == "B08" else 20.0, 20.0, 20.0)
    out = []
    n_cloudy = 0
    pid = re.sub(r"[^A-Za-z0-9]+", "-", path.parent.name)
    for k, t in enumerate(ds[tdim].values):
        hr = np.stack([ds[f"S2-L2A-{bands[c]}"].isel({tdim: k}).values for c in OUTPUT_BANDS]).astype(np.float32)
        hr = _psf.adjust_bandpass(hr, st.band_adjust)
        ok = np.all(np.isfinite(hr) & (hr >= _REFL_RANGE[0]) & (hr <= _REFL_RANGE[1]), axis=0)
        dem = None
        if dem_all is not None:
            dem = dem_all[k].astype(np.float32)
            if not np.isfinite(dem).any():  # elevation is static: take any month that has it
                dem = np.nanmax(dem_all, axis=0).astype(np.float32)
        sar = np.stack([ds[f"S1-SIGMA0-{p}"].isel({tdim: k}).values for p in SAR_POLS]).astype(np.float32) if has_sar else None
        for a, b in chips:
            ys, xs = slice(a * SCALE, (a + cs) * SCALE), slice(b * SCALE, (b + cs) * SCALE)
            if float(ok[ys, xs].mean()) < st.min_clear:
                n_cloudy += 1
                continue
            lr, lr_ok, sigma = _psf.degrade(hr[:, ys, xs], SCALE, mtf_at_nyquist=st.mtf_at_nyquist, valid=ok[ys, xs])
            tr = t10 @ Affine.translation(b * SCALE, a * SCALE)
            out.append(Pair(
                pair_id=f"{pid}_S2deg-S2_{_day(t):%Y%m%d}_{_day(t):%Y%m%d}_r{a:02d}c{b:02d}",
                lr=lr, lr_valid=lr_ok, hr=hr[:, ys, xs], hr_valid=ok[ys, xs], crs=crs,
                transform=(tr.a, tr.b, tr.c, tr.d, tr.e, tr.f), lr_date=np.datetime64(t, "ns"),
                hr_date=np.datetime64(t, "ns"), sensor_pair="S2deg-S2", source=path.name + " (monthly composite)",
                lr_bands="S2deg:" + ",".join(bands[c] for c in OUTPUT_BANDS),
                hr_bands="S2:" + ",".join(bands[c] for c in OUTPUT_BANDS), hr_res=hr_res,
                band_adjust=st.band_adjust, psf_sigma=sigma,
                dem=None if dem is None else dem[ys, xs], sar=None if sar is None else sar[:, ys, xs],
                location=location_from_folder(path.resolve().parent.name),
            ))
    if n_cloudy:
        rep.skip(f"{tag}/synthetic", f"{n_cloudy} of {ds.sizes[tdim] * len(chips)} month-chips below min_clear {st.min_clear}")
    return out


def _find_inputs(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(patch folders, monthly cubes, unrecognised files) under ``root`` (recursive)."""
    from lssr_ray.data.worldcereal import PATCH_LAYERS

    patches, cubes, other = [], [], []
    for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        files = sorted(p for p in d.iterdir() if p.is_file())
        is_patch = any(f.name.startswith(tuple(PATCH_LAYERS.values())) and f.suffix == ".nc" for f in files)
        if is_patch:
            patches.append(d)
        for f in files:
            if f.name.startswith(tuple(PATCH_LAYERS.values())) and f.suffix == ".nc":
                continue
            if is_patch and f.name.startswith("dem_") and f.suffix == ".tif":
                continue
            if f.suffix == ".nc" and _is_monthly_cube(f):
                cubes.append(f)
            elif f.suffix.lower() in (".nc", ".tif", ".tiff"):
                other.append(f)
    return patches, cubes, other


def convert_worldcereal(
    patch_folder: str | Path,
    out: str | Path,
    *,
    max_date_gap_days: int = 1,
    min_clear: float = 0.9,
    chip_size: int = DEFAULT_CHIP_SIZE,
    nir: str = "B08",
    band_adjust: str = "hls_s2a",
    mtf_at_nyquist: float = _psf.DEFAULT_MTF_AT_NYQUIST,
    max_sar_gap_days: int = 6,
    real: bool = True,
    synthetic: bool = True,
    chip_stride: int | None = None,
    mode: str = "w",
    storage_options: dict[str, Any] | None = None,
) -> ConversionReport:
    """Convert WorldCereal patches under ``patch_folder`` into a pairs store at ``out``.

    ``patch_folder`` is one patch folder or a folder of them (searched recursively). Training
    patches (``L8_SR_10m_*``, ``S2_L2A_10m_*``, ``S2_L2A_20m_*``, ``S1_GRD-ASCENDING_20m_*``,
    ``OUTPUT_POLY-*``, ``dem_*.tif``; any subset) give real L8-S2 pairs (L8 and S2 both at least
    ``min_clear`` clear over the chip, dates at most ``max_date_gap_days`` apart) and synthetic
    pairs (each clear S2 date degraded by :func:`lssr_ray.data.psf.degrade`); openEO monthly
    cubes (``S2-L2A-B*`` variables) give synthetic pairs. ``nir``: S2 band used as the NIR
    target (``"B08"`` 10 m or ``"B8A"`` 20 m). ``band_adjust``: MSI -> OLI adjustment of all
    S2-derived reflectance (``"none"``, ``"hls_s2a"``, ``"hls_s2b"``). Every layer or date not
    used is listed in the returned report with the reason. ``chip_stride`` (30 m cells): chip
    origins every ``chip_stride`` cells instead of the default evenly spread overlapping chips.
    Every pair records its ``location`` (:func:`location_from_folder` of its folder).
    """
    if nir not in NIR_CHOICES:
        raise ConfigError(f"nir must be one of {NIR_CHOICES}, got {nir!r}")
    if band_adjust not in _psf.BANDPASS_CHOICES:
        raise ConfigError(f"band_adjust must be one of {_psf.BANDPASS_CHOICES}, got {band_adjust!r}")
    if not 0.0 <= min_clear <= 1.0:
        raise ConfigError(f"min_clear must be a fraction in [0, 1], got {min_clear}")
    if max_date_gap_days < 0 or max_sar_gap_days < 0:
        raise ConfigError("max_date_gap_days and max_sar_gap_days must be >= 0 days")
    if chip_size < 1:
        raise ConfigError(f"chip_size must be >= 1 (30 m cells), got {chip_size}")
    if chip_stride is not None and chip_stride < 1:
        raise ConfigError(f"chip_stride must be >= 1 (30 m cells) or None, got {chip_stride}")
    _psf.sigma_for_mtf(mtf_at_nyquist, SCALE)  # validates the range
    root = Path(patch_folder)
    if not root.is_dir():
        raise MissingDataError(f"patch folder not found: {root}")
    st = _Settings(max_date_gap_days, min_clear, chip_size, nir, band_adjust, mtf_at_nyquist,
                   max_sar_gap_days, real, synthetic, landcover_lookup(), chip_stride)
    rep = ConversionReport()
    patches, cubes, other = _find_inputs(root)
    by_dir: dict[Path, list[str]] = {}
    for f in other:
        by_dir.setdefault(f.parent, []).append(f.name)
    for d, names in by_dir.items():
        rel = d.relative_to(root).as_posix() if d != root else "."
        rep.skip(f"{rel}: {', '.join(names)}", "not a WorldCereal patch layer or monthly input cube (ignored)")
    pairs: list[Pair] = []
    for d in patches:
        pairs += _convert_patch(d, st, rep)
    for c in cubes:
        pairs += _convert_monthly(c, st, rep)
    if not patches and not cubes:
        raise MissingDataError(f"{root} holds no WorldCereal patch files or monthly input cubes")
    if pairs:
        write_pairs(pairs, out, mode=mode, storage_options=storage_options)
    rep.written = [p.pair_id for p in pairs]
    return rep


__all__ = ["AUX", "DEFAULT_CHIP_SIZE", "FORMAT", "FORMAT_VERSION", "NIR_CHOICES", "SAR_POLS", "SCALE",
           "SENSOR_PAIRS", "ConversionReport", "Pair", "convert_worldcereal", "landcover_lookup",
           "location_from_folder", "location_from_pair_id", "open_pairs", "pair_ids", "pair_locations",
           "pairs_to_dataset", "read_pair", "write_pairs"]
