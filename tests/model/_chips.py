"""Real sample chips for the model tests (WorldCereal Flanders patch, 2018-08-02, clear same-day
Landsat-8 / Sentinel-2 pair) read straight from the NetCDF files.

lr: Landsat-8 SR (stored nearest-resampled on the 10 m grid) averaged over 3x3 blocks -> 30 m;
hr: Sentinel-2 L2A (B04, B03, B02 at 10 m; B8A, B11, B12 at 20 m repeated x2) as the 10 m target;
dem: dem_31UDS.tif (20 m, repeated x2); landcover: WorldCereal LC codes mapped to class indices
of lssr_ray/data/landcover_classes.csv; sar: S1 VV/VH dB of 2018-08-01 (20 m, repeated x2). Two 48x48 (10 m) chips.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2] / "data" / "samples" / "worldcereal_flanders_31UDS_2018"
TABLE = Path(__file__).resolve().parents[2] / "lssr_ray" / "data" / "landcover_classes.csv"


def lc_index() -> dict[int, int]:
    """WorldCereal LC code -> class index of the project's land-cover table (0 = unknown)."""
    import csv

    with TABLE.open() as fh:
        return {int(r["code"]): int(r["index"]) for r in csv.DictReader(fh)}


def _open(prefix: str):
    import xarray as xr

    return xr.open_dataset(next(ROOT.glob(prefix + "*.nc")), engine="netcdf4", mask_and_scale=False)


def _x2(a: np.ndarray) -> np.ndarray:
    return a.repeat(2, axis=-2).repeat(2, axis=-1)


@functools.lru_cache(maxsize=1)
def flanders_scene() -> dict[str, np.ndarray]:
    """Full 64x64 (10 m) layers: l8 (6, 64, 64), s2 (6, 64, 64) reflectance, dem, lc, sar."""
    import rasterio

    def refl(ds, bands, when):
        sel = ds.sel(timestamp=when, method="nearest")
        raw = np.stack([sel[b].values.astype(np.float32) for b in bands])
        return np.where((raw > 0) & (raw < 60000), raw * 1e-4, np.nan).astype(np.float32)

    l8 = refl(_open("L8_SR_10m_"), ("B04", "B03", "B02", "B05", "B06", "B07"), "2018-08-02")
    s10 = refl(_open("S2_L2A_10m_"), ("B04", "B03", "B02"), "2018-08-02")
    s20 = _x2(refl(_open("S2_L2A_20m_"), ("B8A", "B11", "B12"), "2018-08-02"))
    s1 = _open("S1_GRD-ASCENDING_20m_").sel(timestamp="2018-08-01", method="nearest")
    sar = _x2(np.stack([np.where(s1[b].values != 0, s1[b].values * 1e-4, np.nan) for b in ("VV", "VH")]))
    with rasterio.open(ROOT / "dem_31UDS.tif") as src:
        dem = _x2(src.read(1).astype(np.float32))
    lc_raw = _open("OUTPUT_POLY-").LC.values
    table = lc_index()
    lc = np.vectorize(lambda v: table.get(int(v), 0))(lc_raw).astype(np.int64)
    return {"l8": l8, "s2": np.concatenate([s10, s20]), "dem": dem, "lc": lc, "sar": sar.astype(np.float32)}


def flanders_batch(offsets=((0, 0), (16, 16)), size: int = 48) -> tuple[dict, np.ndarray]:
    """(batch dict per docs/ARCHITECTURE.md with B = len(offsets), hr target (B, 6, size, size))."""
    s = flanders_scene()
    lr, hr, dem, lc, sar = [], [], [], [], []
    for y, x in offsets:
        win = (slice(y, y + size), slice(x, x + size))
        l8 = s["l8"][(slice(None),) + win]
        lr.append(l8.reshape(6, size // 3, 3, size // 3, 3).mean(axis=(2, 4)))
        hr.append(s["s2"][(slice(None),) + win])
        dem.append(s["dem"][win][None])
        lc.append(s["lc"][win][None])
        sar.append(s["sar"][(slice(None),) + win])
    b = len(offsets)
    batch = {
        "chip_id": np.array([f"r{y:04d}c{x:04d}" for y, x in offsets]),
        "lr": np.stack(lr).astype(np.float32),
        "dem": np.stack(dem).astype(np.float32),
        "landcover": np.stack(lc),
        "sar": np.stack(sar).astype(np.float32),
        "month": np.full(b, 8, np.int64),
        "present": np.ones((b, 3), np.float32),
    }
    return batch, np.stack(hr).astype(np.float32)
