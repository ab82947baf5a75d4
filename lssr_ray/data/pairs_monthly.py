"""openEO monthly composite cube (``worldcereal_preprocessed_inputs.nc``) -> synthetic pairs.

Each month's S2 composite is a 10 m target; its degraded copy (:func:`lssr_ray.data.psf.degrade`)
the 30 m input. Chips sit on the cube's own grid (30 m cells from its origin).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import psf as _psf
from lssr_ray.data.blockgrid import SCALE, whole_cells
from lssr_ray.data.pair_sources import (
    NIR_CHOICES,
    REFL_RANGE,
    ConversionReport,
    ConvertSettings,
    crs_string,
    day,
    tile_offsets,
)
from lssr_ray.data.pairs import SAR_POLS, Pair, location_from_folder


def convert_monthly(path: Path, st: ConvertSettings, rep: ConversionReport) -> list[Pair]:
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
    crs = crs_string(ds)
    t10 = ds.rio.transform()
    H0, W0 = ds.sizes["y"], ds.sizes["x"]
    nr, nc = whole_cells((H0, W0), (0, 0))
    cs = st.chip_size
    if nr < cs or nc < cs:
        rep.skip(tag, f"cube holds {nr}x{nc} whole 30 m cells, fewer than chip_size {cs}")
        return []
    chips = [(a, b) for a in tile_offsets(nr, cs, st.chip_stride) for b in tile_offsets(nc, cs, st.chip_stride)]
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
        ok = np.all(np.isfinite(hr) & (hr >= REFL_RANGE[0]) & (hr <= REFL_RANGE[1]), axis=0)
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
                pair_id=f"{pid}_S2deg-S2_{day(t):%Y%m%d}_{day(t):%Y%m%d}_r{a:02d}c{b:02d}",
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


__all__ = ["convert_monthly"]
