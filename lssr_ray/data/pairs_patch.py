"""WorldCereal training patch -> pairs: real L8-S2 pairs and synthetic S2-degraded pairs.

A patch folder holds ``L8_SR_10m`` (a 3x3 nearest-neighbour copy of Landsat-8 30 m cells),
``S2_L2A_10m`` / ``_20m``, ``S1_GRD-ASCENDING_20m``, ``OUTPUT_POLY`` labels and ``dem_*.tif``
(any subset). :func:`load_patch` reads them once onto the patch's 10 m grid (:class:`PatchLayers`);
:func:`real_pairs` and :func:`synthetic_pairs` cut chips on the L8 30 m lattice from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import psf as _psf
from lssr_ray.data.blockgrid import SCALE, block_phase, whole_cells
from lssr_ray.data.pair_sources import (
    LANDCOVER_CSV,
    REFL_RANGE,
    ConversionReport,
    ConvertSettings,
    crs_string,
    day,
    nearest_time,
    patch_id,
    resample,
    tile_offsets,
)
from lssr_ray.data.pairs import SAR_POLS, Pair, location_from_folder


@dataclass
class PatchLayers:
    """One patch's layers on its full 10 m grid (H0 x W0), read once; chips are cut from them."""

    folder: Path
    files: dict[str, Path]
    st: ConvertSettings
    pid: str
    crs: str
    t10: Affine
    s10: Any
    """S2_L2A_10m Dataset (decoded)."""
    s2_times: np.ndarray
    up20: dict[str, np.ndarray]
    """20 m S2 bands (B11, B12, B8A if nir) bilinear on the 10 m grid, (t, H0, W0) reflectance."""
    clear10: np.ndarray
    """(t, H0, W0) clear mask from SCL (nearest on the 10 m grid)."""
    s1: Any
    s1_10: np.ndarray | None
    """(t, pol, H0, W0) sigma0 dB on the 10 m grid, or None."""
    dem: np.ndarray | None
    lc: np.ndarray | None
    phase: tuple[int, int]
    """10 m pixel (row, col) where the L8 30 m cells start."""
    chips: list[tuple[int, int]]
    """Chip origins (a, b) in whole 30 m cells from :attr:`phase`."""

    @property
    def hr_res(self) -> tuple[float, ...]:
        return (10.0, 10.0, 10.0, 10.0 if self.st.nir == "B08" else 20.0, 20.0, 20.0)

    @property
    def hr_bands(self) -> str:
        return f"S2:B04,B03,B02,{self.st.nir},B11,B12"

    @property
    def base_sources(self) -> list[str]:
        src = [self.files["s2_10m"].name, self.files["s2_20m"].name]
        if "dem" in self.files:
            src.append(self.files["dem"].name)
        if self.lc is not None:
            src.append(self.files["labels"].name)
        return src

    def window(self, a: int, b: int) -> tuple[slice, slice]:
        """10 m slices of chip (a, b)."""
        cs, (r0, c0) = self.st.chip_size, self.phase
        ys, xs = r0 + a * SCALE, c0 + b * SCALE
        return slice(ys, ys + cs * SCALE), slice(xs, xs + cs * SCALE)

    def chip_transform(self, a: int, b: int) -> tuple[float, ...]:
        """GDAL-order 10 m affine of chip (a, b)."""
        t = self.t10 @ Affine.translation(self.phase[1] + b * SCALE, self.phase[0] + a * SCALE)
        return (t.a, t.b, t.c, t.d, t.e, t.f)

    def s2_target(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Full-patch 10 m target (6, H0, W0) of S2 date ``i`` and its validity, band-adjusted."""
        stack = [self.s10[b].values[i].astype(np.float32) for b in ("B04", "B03", "B02")]
        stack.append(self.s10["B08"].values[i].astype(np.float32) if self.st.nir == "B08" else self.up20["B8A"][i])
        stack += [self.up20["B11"][i], self.up20["B12"][i]]
        hr = _psf.adjust_bandpass(np.stack(stack), self.st.band_adjust)
        ok = self.clear10[i] & np.all(np.isfinite(hr) & (hr >= REFL_RANGE[0]) & (hr <= REFL_RANGE[1]), axis=0)
        return hr, ok

    def sar_for(self, t) -> tuple[np.ndarray | None, str]:
        """S1 (pol, H0, W0) nearest to time ``t`` within max_sar_gap_days, and its file name."""
        if self.s1_10 is None:
            return None, ""
        j = nearest_time(self.s1["timestamp"].values, t, self.st.max_sar_gap_days)
        if j is None:
            return None, ""
        return self.s1_10[j], self.files["s1"].name

    def make_pair(self, kind: str, a: int, b: int, lr, lr_valid, hr, hr_valid, lr_t, hr_t, sar,
                  extra_src: list[str], sigma: float, lr_bands: str) -> Pair:
        """The pair of chip (a, b): ``hr``, ``hr_valid``, ``sar`` are full-patch and cut here."""
        ys, xs = self.window(a, b)
        sensor = "L8-S2" if kind == "real" else "S2deg-S2"
        return Pair(
            pair_id=f"{self.pid}_{sensor}_{day(lr_t):%Y%m%d}_{day(hr_t):%Y%m%d}_r{a:02d}c{b:02d}",
            lr=lr, lr_valid=lr_valid, hr=hr[:, ys, xs], hr_valid=hr_valid[ys, xs], crs=self.crs,
            transform=self.chip_transform(a, b), lr_date=np.datetime64(lr_t, "ns"),
            hr_date=np.datetime64(hr_t, "ns"), sensor_pair=sensor, source=";".join(self.base_sources + extra_src),
            lr_bands=lr_bands, hr_bands=self.hr_bands, hr_res=self.hr_res, band_adjust=self.st.band_adjust,
            psf_sigma=sigma, dem=None if self.dem is None else self.dem[ys, xs],
            landcover=None if self.lc is None else self.lc[ys, xs],
            sar=None if sar is None else sar[:, ys, xs], location=location_from_folder(self.folder.resolve().name),
        )


def _l8_lattice(patch: Any, name: str, st: ConvertSettings, rep: ConversionReport):
    """((l8 pixel_qa Dataset, int16 DN by band) or None, phase) from the L8 block copy."""
    from lssr_ray.data import worldcereal as wc

    if "l8" not in patch.files:
        if st.real:
            rep.skip(f"{name}/real", "no L8_SR_10m file: no real pairs")
        return None, (0, 0)
    l8_raw = wc.open_nc(patch.files["l8"], mask_and_scale=False)[["pixel_qa"]].load()
    dn = {c: wc.l8_reflectance_int16(patch, b).values for c, b in _psf.L8_BANDS.items()}
    bp = block_phase(dn["red"])
    if bp.score < 0.95:
        rep.skip(f"{name}/L8", f"L8 layer is not a 3x3 nearest-neighbour copy of a 30 m grid (best block agreement {bp.score:.2f})")
        return None, (0, 0)
    rep.notes.append(f"{name}: L8 30 m cells start at 10 m pixel (row {bp.row}, col {bp.col}); agreement {bp.score:.3f}")
    return (l8_raw, dn), bp.phase


def _landcover(patch: Any, name: str, st: ConvertSettings, rep: ConversionReport) -> np.ndarray | None:
    """Land-cover class index (H0, W0) int16 from the labels' LC codes, or None (reported)."""
    from lssr_ray.data import worldcereal as wc

    if "labels" not in patch.files:
        rep.skip(f"{name}/landcover", "no OUTPUT_POLY labels file")
        return None
    if st.lc_lookup is None:
        rep.skip(f"{name}/landcover", f"{LANDCOVER_CSV.name} not found: LC codes cannot be mapped to class indices")
        return None
    codes = wc.open_nc(patch.files["labels"], mask_and_scale=False)["LC"].values.astype(np.int64)
    lc = np.vectorize(lambda c: st.lc_lookup.get(int(c), 0), otypes=[np.int16])(codes)
    unknown = sorted(set(np.unique(codes).tolist()) - set(st.lc_lookup) - {0})
    if unknown:
        rep.notes.append(f"{name}: LC codes {unknown} not in {LANDCOVER_CSV.name} -> 0 (unknown)")
    return lc


def load_patch(folder: Path, st: ConvertSettings, rep: ConversionReport):
    """(:class:`PatchLayers`, L8 layers or None) of one patch, or None when it gives no pairs (reported)."""
    from lssr_ray.data import masks
    from lssr_ray.data import worldcereal as wc

    patch = wc.open_patch(folder)
    name = folder.name
    if "s2_10m" not in patch.files:
        rep.skip(name, "no S2_L2A_10m file: no 10 m target (a 20 m-only patch cannot give 10 m truth)")
        return None
    if "s2_20m" not in patch.files:
        rep.skip(name, "no S2_L2A_20m file: SCL clear mask and B11/B12 targets are missing")
        return None
    s10 = patch.s2_10m.load()  # small patches: one read instead of one per date and band
    s20 = wc.open_nc(patch.files["s2_20m"], mask_and_scale=False).load()
    crs, t10, t20 = crs_string(s10), s10.rio.transform(), s20.rio.transform()
    H0, W0 = s10.sizes["y"], s10.sizes["x"]
    if not np.array_equal(s10["timestamp"].values, s20["timestamp"].values):
        rep.skip(name, "S2_L2A_10m and S2_L2A_20m timestamps differ; cannot pair SCL with 10 m bands")
        return None
    needed_10 = ["B04", "B03", "B02"] + (["B08"] if st.nir == "B08" else [])
    needed_20 = ["B11", "B12", "SCL"] + (["B8A"] if st.nir == "B8A" else [])
    miss = [b for b in needed_10 if b not in s10] + [b for b in needed_20 if b not in s20]
    if miss:
        rep.skip(name, f"S2 bands missing for the 10 m target: {miss}")
        return None
    l8, phase = _l8_lattice(patch, name, st, rep)
    nr, nc = whole_cells((H0, W0), phase)
    cs = st.chip_size
    if nr < cs or nc < cs:
        rep.skip(name, f"patch holds {nr}x{nc} whole 30 m cells, fewer than chip_size {cs}")
        return None
    chips = [(a, b) for a in tile_offsets(nr, cs, st.chip_stride) for b in tile_offsets(nc, cs, st.chip_stride)]
    dem = None
    if patch.dem is not None:  # static aux on the full 10 m patch grid
        dem = resample(patch.dem.values, patch.dem.rio.transform(), t10, (H0, W0), crs, method="bilinear")
    else:
        rep.skip(f"{name}/dem", "no dem_*.tif in the patch folder")
    lc = _landcover(patch, name, st, rep)
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
        up20[bname] = resample(v * np.float32(1e-4), t20, t10, (H0, W0), crs, method="bilinear")
    scl10 = resample(s20["SCL"].values.astype(np.float32), t20, t10, (H0, W0), crs, method="nearest")
    s1_10 = None
    if s1 is not None:
        v = np.stack([s1[p].values for p in SAR_POLS], axis=1).astype(np.float32)  # (t, pol, y, x)
        s1_10 = resample(v, s1.rio.transform(), t10, (H0, W0), crs, method="bilinear")
    layers = PatchLayers(
        folder=folder, files=patch.files, st=st, pid=patch_id(folder, s10), crs=crs, t10=t10, s10=s10,
        s2_times=s10["timestamp"].values, up20=up20,
        clear10=masks.clear_from_scl(np.nan_to_num(scl10).astype(np.uint8)), s1=s1, s1_10=s1_10,
        dem=dem, lc=lc, phase=phase, chips=chips,
    )
    return layers, l8


def real_pairs(layers: PatchLayers, l8, rep: ConversionReport) -> dict[str, Pair]:
    """Real pairs: each L8 date with a clear S2 date within max_date_gap_days, chips clear in both."""
    from lssr_ray.data import masks

    st, name, s2_times, out = layers.st, layers.folder.name, layers.s2_times, {}
    l8_raw, dn = l8
    qa = l8_raw["pixel_qa"].values
    for k, t in enumerate(l8_raw["timestamp"].values):
        cand = [i for i, ts in enumerate(s2_times) if abs((day(ts) - day(t)).days) <= st.max_date_gap_days]
        tag = f"{name}/L8 {day(t)}"
        if not cand:
            rep.skip(tag, f"no S2 date within {st.max_date_gap_days} d")
            continue
        cand.sort(key=lambda i: (abs((day(s2_times[i]) - day(t)).days), -float(layers.s2_target(i)[1].mean())))
        i = cand[0]
        hr, ok = layers.s2_target(i)
        sar, sar_src = layers.sar_for(t)
        for a, b in layers.chips:
            ys, xs = layers.window(a, b)
            cell = (slice(ys.start + 1, ys.stop, SCALE), slice(xs.start + 1, xs.stop, SCALE))  # block centres
            lr_dn = np.stack([dn[c][k][cell] for c in OUTPUT_BANDS]).astype(np.float32)
            lr_ok = masks.clear_from_pixel_qa(qa[k][cell]) & np.all(
                (lr_dn >= REFL_RANGE[0] * 1e4) & (lr_dn <= REFL_RANGE[1] * 1e4), axis=0)
            lc_frac, hc_frac = float(lr_ok.mean()), float(ok[ys, xs].mean())
            ctag = f"{tag} / S2 {day(s2_times[i])} chip r{a:02d}c{b:02d}"
            if lc_frac < st.min_clear or hc_frac < st.min_clear:
                rep.skip(ctag, f"clear fraction L8 {lc_frac:.2f}, S2 {hc_frac:.2f} < min_clear {st.min_clear}")
                continue
            lr = lr_dn * np.float32(1e-4)
            p = layers.make_pair("real", a, b, lr, lr_ok, hr, ok, t, s2_times[i], sar,
                                 [layers.files["l8"].name] + ([sar_src] if sar_src else []), float("nan"),
                                 "L8:" + ",".join(_psf.L8_BANDS[c] for c in OUTPUT_BANDS))
            old = out.get(p.pair_id)  # two L8 entries on one day: keep the clearer one
            if old is None or old.lr_valid.mean() < p.lr_valid.mean():
                out[p.pair_id] = p
    return out


def synthetic_pairs(layers: PatchLayers, rep: ConversionReport) -> dict[str, Pair]:
    """Synthetic pairs: every clear S2 date-chip, degraded to 30 m by :func:`lssr_ray.data.psf.degrade`."""
    st, out, n_cloudy = layers.st, {}, 0
    for i, t in enumerate(layers.s2_times):
        hr, ok = layers.s2_target(i)
        sar, sar_src = layers.sar_for(t)
        for a, b in layers.chips:
            ys, xs = layers.window(a, b)
            if float(ok[ys, xs].mean()) < st.min_clear:
                n_cloudy += 1
                continue
            lr, lr_ok, sigma = _psf.degrade(hr[:, ys, xs], SCALE, mtf_at_nyquist=st.mtf_at_nyquist, valid=ok[ys, xs])
            p = layers.make_pair("synthetic", a, b, lr, lr_ok, hr, ok, t, t, sar, [sar_src] if sar_src else [],
                                 sigma, "S2deg:" + layers.hr_bands.split(":", 1)[1])
            out[p.pair_id] = p
    if n_cloudy:
        rep.skip(f"{layers.folder.name}/synthetic",
                 f"{n_cloudy} of {len(layers.s2_times) * len(layers.chips)} S2 date-chips below min_clear {st.min_clear}")
    return out


def convert_patch(folder: Path, st: ConvertSettings, rep: ConversionReport) -> list[Pair]:
    """Pairs from one WorldCereal training patch (L8_SR_10m / S2_L2A_10m / _20m / S1 / labels / dem)."""
    loaded = load_patch(folder, st, rep)
    if loaded is None:
        return []
    layers, l8 = loaded
    out: dict[str, Pair] = {}
    if l8 is not None and st.real:
        out.update(real_pairs(layers, l8, rep))
    if st.synthetic:
        out.update(synthetic_pairs(layers, rep))
    return list(out.values())


__all__ = ["PatchLayers", "convert_patch", "load_patch", "real_pairs", "synthetic_pairs"]
