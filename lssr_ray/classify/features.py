"""Per-pixel classifier features from a season of 10 m reflectance, and the feature sources.

Reflectance is float32 in [0, 1], bands in ``OUTPUT_BANDS`` order (red, green, blue, nir, swir1,
swir2), NaN = cloud/nodata, arrays (time, band, y, x) on the 10 m UTM grid. Features are NaN-robust
season statistics, so any number of dates gives the same fixed feature list:

* ``m{k:02d}_{band}``: median of the clear observations in month ``k`` of the season
  (k = 0 is the month of ``season_start``), for the six bands and NDVI;
* ``q{p:02d}_{band}``: the p-th percentile over all clear observations of the season;
* ``aux_{name}``: optional static layers (DEM metres, land cover index, ...).

Sources (:data:`SOURCES`) turn a WorldCereal patch folder into such a time series:
``s2`` native Sentinel-2 (10 m B04/B03/B02, NIR and SWIR from 20 m, nearest-neighbour to 10 m),
``nearest30`` the Landsat-8 30 m content as it is on the 10 m grid, ``bicubic`` the 30 m cells
upsampled bicubically to 10 m, ``lssr`` the 30 m cells super-resolved by a callable given later.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.classify.nanstats import nanquantile_first_axis
from lssr_ray.config import OUTPUT_BANDS, SCALE
from lssr_ray.data.blockgrid import block_phase, coarse_grid, to_blocks
from lssr_ray.errors import ConfigError, MissingDataError

__all__ = [
    "FEATURE_BANDS",
    "SOURCES",
    "LSSRSuperResolver",
    "PatchSeries",
    "available_sources",
    "load_patch_series",
    "lowres_cells",
    "lssr_sr_for_patch",
    "ndvi",
    "pixel_matrix",
    "season_features",
]

FEATURE_BANDS: tuple[str, ...] = OUTPUT_BANDS + ("ndvi",)
"""Per-observation bands the season statistics are computed over."""

SOURCES: tuple[str, ...] = ("s2", "nearest30", "bicubic", "lssr")
"""Feature sources of :func:`load_patch_series`."""

#: Super-resolution callable: (T, 6, h, w) 30 m reflectance -> (T, 6, 3h, 3w) 10 m reflectance,
#: NaN = nodata, output pixel (3i..3i+2, 3j..3j+2) inside input pixel (i, j).
SRCallable = Callable[[np.ndarray], np.ndarray]


def ndvi(reflectance: np.ndarray) -> np.ndarray:
    """NDVI from (..., 6, H, W) reflectance in OUTPUT_BANDS order -> (..., H, W), NaN where undefined."""
    red = reflectance[..., OUTPUT_BANDS.index("red"), :, :]
    nir = reflectance[..., OUTPUT_BANDS.index("nir"), :, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (nir - red) / (nir + red)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def _month_index(dates: np.ndarray, season_start: np.datetime64) -> np.ndarray:
    months = dates.astype("datetime64[M]").astype(np.int64)
    return months - np.datetime64(season_start, "M").astype(np.int64)


def season_features(
    reflectance: np.ndarray,
    dates: Sequence[Any] | np.ndarray,
    *,
    season_start: str | np.datetime64,
    n_months: int = 12,
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
    aux: np.ndarray | None = None,
    aux_names: Sequence[str] = (),
) -> tuple[np.ndarray, list[str]]:
    """Season statistics per pixel.

    ``reflectance`` (T, 6, H, W) float32 in [0, 1], NaN = nodata; ``dates`` (T,) acquisition
    times; observations outside ``[season_start, season_start + n_months)`` are ignored.
    ``aux`` (A, H, W) float with ``aux_names`` (A names). Returns ``(features, names)``:
    features (F, H, W) float32, NaN where a statistic has no clear observation (LightGBM treats
    NaN as missing), F = 7 * n_months + 7 * len(quantiles) + A.
    """
    refl = np.asarray(reflectance, dtype=np.float32)
    if refl.ndim != 4 or refl.shape[1] != len(OUTPUT_BANDS):
        raise ConfigError(f"reflectance must be (T, 6, H, W) in {OUTPUT_BANDS} order, got {refl.shape}")
    d = np.asarray(dates, dtype="datetime64[ns]")
    if d.shape != (refl.shape[0],):
        raise ConfigError(f"{d.shape[0] if d.ndim else 0} dates for {refl.shape[0]} observations")
    if n_months < 1 or not all(0.0 <= q <= 1.0 for q in quantiles):
        raise ConfigError(f"n_months must be >= 1 and quantiles in [0, 1], got {n_months}, {quantiles}")
    k = _month_index(d, np.datetime64(season_start))
    inside = (k >= 0) & (k < n_months)
    obs = np.concatenate([refl, ndvi(refl)[:, None]], axis=1)[inside]  # (T', 7, H, W)
    k = k[inside]
    _, nb, h, w = obs.shape
    feats: list[np.ndarray] = []
    names: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected (clouds)
        for m in range(n_months):
            sel = obs[k == m]
            comp = np.nanmedian(sel, axis=0) if len(sel) else np.full((nb, h, w), np.nan, np.float32)
            feats.append(comp)
            names += [f"m{m:02d}_{b}" for b in FEATURE_BANDS]
        if quantiles:
            if len(obs):
                qs = nanquantile_first_axis(obs, quantiles)  # (Q, 7, H, W)
            else:
                qs = np.full((len(quantiles), nb, h, w), np.nan, np.float32)
            for qi, q in enumerate(quantiles):
                feats.append(qs[qi])
                names += [f"q{round(q * 100):02d}_{b}" for b in FEATURE_BANDS]
    if aux is not None:
        aux = np.asarray(aux, dtype=np.float32)
        if aux.ndim != 3 or aux.shape[1:] != (h, w) or len(aux_names) != aux.shape[0]:
            raise ConfigError(f"aux must be (A, {h}, {w}) with A names, got {aux.shape}, {list(aux_names)}")
        feats.append(aux)
        names += [f"aux_{n}" for n in aux_names]
    return np.concatenate(feats, axis=0).astype(np.float32), names


def pixel_matrix(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(F, H, W) features and (H, W) bool mask -> (N, F) rows of the masked pixels (row-major)."""
    return np.ascontiguousarray(features[:, mask].T)


@dataclass(frozen=True)
class PatchSeries:
    """A reflectance time series on the patch's 10 m grid."""

    reflectance: np.ndarray
    """(T, 6, H, W) float32 in [0, 1], OUTPUT_BANDS order, NaN = cloud/nodata."""
    dates: np.ndarray
    """(T,) datetime64[ns] acquisition times."""
    crs: Any
    """Grid CRS (rasterio CRS, UTM)."""
    transform: Any
    """10 m grid transform (affine.Affine)."""
    source: str
    """Which of :data:`SOURCES` made it."""


def _find(patch_dir: Path, pattern: str) -> Path | None:
    hits = sorted(glob.glob(str(patch_dir / pattern)))
    return Path(hits[0]) if hits else None


def _scaled(raw: np.ndarray, attrs: dict) -> np.ndarray:
    scale = float(attrs.get("scale_factor", 1.0))
    fill = attrs.get("_FillValue", 0)
    out = raw.astype(np.float32) * np.float32(scale)
    out[raw == fill] = np.nan
    out[(out < 0) | (out > 1)] = np.nan  # saturated/invalid surface reflectance (e.g. raw 65535)
    return out


def _read_stack(path: Path, names: Sequence[str]) -> tuple[np.ndarray, Any, Any, np.ndarray, dict]:
    from lssr_ray.classify.labels import read_netcdf_variable

    arrays, attrs = [], {}
    crs = transform = times = None
    for n in names:
        raw, crs, transform, a, times = read_netcdf_variable(path, n)
        arrays.append(raw)
        attrs[n] = a
    return np.stack(arrays, axis=1), crs, transform, np.asarray(times, "datetime64[ns]"), attrs


def _s2(patch_dir: Path, nir: str) -> PatchSeries:
    from lssr_ray.data.masks import clear_from_scl

    f10, f20 = _find(patch_dir, "S2_L2A_10m_*.nc"), _find(patch_dir, "S2_L2A_20m_*.nc")
    if f10 is None or f20 is None:
        raise MissingDataError(f"source 's2' needs S2_L2A_10m_*.nc and S2_L2A_20m_*.nc in {patch_dir}")
    if nir not in ("B08", "B8A"):
        raise ConfigError(f"s2 NIR band must be 'B08' (10 m) or 'B8A' (20 m, HLS S30 nir), got {nir!r}")
    b10 = ["B04", "B03", "B02"] + (["B08"] if nir == "B08" else [])
    b20 = (["B8A"] if nir == "B8A" else []) + ["B11", "B12", "SCL"]
    raw10, crs, t10, d10, a10 = _read_stack(f10, b10)
    raw20, _, t20, d20, a20 = _read_stack(f20, b20)
    if not (np.array_equal(d10, d20) and t20.c == t10.c and t20.f == t10.f and t20.a == 2 * t10.a):
        raise ConfigError(f"{f10.name} and {f20.name} are not the same dates on nested 10/20 m grids")
    up = raw20.repeat(2, axis=2).repeat(2, axis=3)[:, :, : raw10.shape[2], : raw10.shape[3]]
    bands10 = {n: _scaled(raw10[:, i], a10[n]) for i, n in enumerate(b10)}
    bands20 = {n: _scaled(up[:, i], a20[n]) for i, n in enumerate(b20) if n != "SCL"}
    allb = {**bands10, **bands20}
    refl = np.stack([allb[n] for n in ("B04", "B03", "B02", nir, "B11", "B12")], axis=1)
    clear = clear_from_scl(up[:, b20.index("SCL")])
    refl[~np.broadcast_to(clear[:, None], refl.shape)] = np.nan
    return PatchSeries(refl, d10, crs, t10, "s2")


def _landsat_nn(patch_dir: Path) -> PatchSeries:
    from lssr_ray.data.masks import clear_from_pixel_qa

    f = _find(patch_dir, "L8_SR_10m_*.nc")
    if f is None:
        raise MissingDataError(f"sources 'nearest30'/'bicubic'/'lssr' need L8_SR_10m_*.nc in {patch_dir}")
    names = ["B04", "B03", "B02", "B05", "B06", "B07"]  # Landsat-8 red..swir2 = OUTPUT_BANDS order
    raw, crs, t, dates, attrs = _read_stack(f, names + ["pixel_qa"])
    refl = np.stack([_scaled(raw[:, i], attrs[n]) for i, n in enumerate(names)], axis=1)
    clear = clear_from_pixel_qa(raw[:, -1])
    refl[~np.broadcast_to(clear[:, None], refl.shape)] = np.nan
    return PatchSeries(refl, dates, crs, t, "nearest30")


def lowres_cells(series: PatchSeries, *, scale: int = SCALE) -> tuple[np.ndarray, Any, tuple[int, int]]:
    """Recover the 30 m cells of nearest-neighbour 10 m data.

    Returns ``(cells, transform30, (pad_rows, pad_cols))``: cells (T, 6, h, w) float32 (median of
    the clear 10 m pixels of each cell, NaN if none), the 30 m transform, and how many 10 m
    pixels of the first (partial) cell lie above/left of the patch.
    """
    refl = series.reflectance
    phase = block_phase(refl, factor=scale).require("the Landsat layer")
    grid = coarse_grid(series.transform, refl.shape[-2:], phase.phase, factor=scale)
    blocks = to_blocks(refl, grid.lead, grid.shape, factor=scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cells = np.nanmedian(blocks, axis=(3, 5)).astype(np.float32)
    return cells, grid.transform, grid.lead


def _bicubic(series: PatchSeries) -> PatchSeries:
    from rasterio.warp import Resampling, reproject

    cells, t30, _ = lowres_cells(series)
    t, b, h, w = series.reflectance.shape
    out = np.full((t * b, h, w), np.nan, np.float32)
    reproject(
        cells.reshape(t * b, *cells.shape[2:]),
        out,
        src_transform=t30,
        src_crs=series.crs,
        src_nodata=np.nan,
        dst_transform=series.transform,
        dst_crs=series.crs,
        dst_nodata=np.nan,
        resampling=Resampling.cubic,
    )
    return PatchSeries(out.reshape(t, b, h, w), series.dates, series.crs, series.transform, "bicubic")


def _lssr(series: PatchSeries, sr: SRCallable) -> PatchSeries:
    cells, _, (pr, pc) = lowres_cells(series)
    out = np.asarray(sr(cells), dtype=np.float32)
    _, b, h, w = series.reflectance.shape
    want = (cells.shape[0], b, cells.shape[2] * SCALE, cells.shape[3] * SCALE)
    if out.shape != want:
        raise ConfigError(f"the super-resolution callable returned {out.shape}; expected {want}")
    return PatchSeries(out[:, :, pr : pr + h, pc : pc + w].copy(), series.dates, series.crs,
                       series.transform, "lssr")


class LSSRSuperResolver:
    """An :data:`SRCallable` running :class:`lssr_ray.model.pipeline.LSSRPipeline` on 30 m cells.

    ``cells`` (T, 6, h, w) float32 reflectance (NaN = cloud/nodata) are padded with NaN at the
    bottom/right to (T, 6, h', w') with h', w' multiples of 8 (so that the 10 m edge 3h' is a
    multiple of 8, as the VAE needs), sent through the pipeline as T chips in batches of
    ``batch_size`` and cropped back to (T, 6, 3h, 3w); outputs are NaN on the 3x3 children of
    invalid cells (the pipeline's postprocess). ``months`` (T,) 1..12 per observation;
    ``dem`` optional (3h', 3w') metres on the padded 10 m grid (NaN missing); land cover and
    SAR are sent as absent (present = 0).
    """

    def __init__(self, pipeline: Any, months: Sequence[int], *, dem: np.ndarray | None = None,
                 batch_size: int = 4) -> None:
        self.pipeline = pipeline
        self.months = np.asarray(months, np.int64)
        self.dem = None if dem is None else np.asarray(dem, np.float32)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def __call__(self, cells: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells, np.float32)
        if cells.ndim != 4 or cells.shape[1] != len(OUTPUT_BANDS) or cells.shape[0] != len(self.months):
            raise ConfigError(f"cells must be (T={len(self.months)}, 6, h, w), got {cells.shape}")
        t, b, h, w = cells.shape
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
        pad = np.full((t, b, hp, wp), np.nan, np.float32)
        pad[:, :, :h, :w] = cells
        dem = None
        if self.dem is not None:
            if self.dem.shape != (3 * hp, 3 * wp):
                raise ConfigError(f"dem must be ({3 * hp}, {3 * wp}) on the padded 10 m grid, got {self.dem.shape}")
            dem = self.dem
        out = np.full((t, b, 3 * hp, 3 * wp), np.nan, np.float32)
        for s in range(0, t, self.batch_size):
            n = min(self.batch_size, t - s)
            batch: dict[str, Any] = {
                "chip_id": np.asarray([f"t{s + i:04d}" for i in range(n)]),
                "lr": pad[s : s + n],
                "month": self.months[s : s + n],
                "present": np.tile(np.asarray([[float(dem is not None), 0.0, 0.0]], np.float32), (n, 1)),
            }
            if dem is not None:
                batch["dem"] = np.broadcast_to(dem, (n, 1, *dem.shape)).copy()
            out[s : s + n] = self.pipeline(batch)["sr"]
        return out[:, :, : 3 * h, : 3 * w]


def lssr_sr_for_patch(
    patch_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    base: str | Path | None = None,
    batch_size: int = 4,
) -> LSSRSuperResolver:
    """The ``lssr`` source's callable for one WorldCereal patch: LSSR from ``checkpoint`` on
    ``base`` (defaults and errors: :func:`~lssr_ray.model.checkpoint.resolve_checkpoint`; no
    untrained fallback), the month of each Landsat-8 date, and the patch's ``dem_*.tif`` (metres,
    bilinear onto the padded 10 m cell grid) when present. Land cover and SAR are absent
    (present = 0): the patch has no land-cover layer and its Sentinel-1 dates differ from the
    Landsat dates.
    """
    from affine import Affine

    from lssr_ray.model.checkpoint import resolve_checkpoint
    from lssr_ray.model.pipeline import LSSRPipeline

    p = Path(patch_dir)
    ref = resolve_checkpoint(checkpoint, base=base, allow_untrained=False)
    nn = _landsat_nn(p)
    cells, t30, _ = lowres_cells(nn)
    months = nn.dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    _, _, h, w = cells.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    dem = None
    dem_file = _find(p, "dem_*.tif")
    if dem_file is not None:
        import rasterio
        from rasterio.warp import Resampling, reproject

        dem = np.full((3 * hp, 3 * wp), np.nan, np.float32)
        with rasterio.open(dem_file) as src:
            reproject(rasterio.band(src, 1), dem, dst_transform=t30 * Affine.scale(1 / 3), dst_crs=nn.crs,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)
        if not np.isfinite(dem).any():
            dem = None
    pipe = LSSRPipeline.from_pretrained(ref.path, base=ref.base)
    return LSSRSuperResolver(pipe, months, dem=dem, batch_size=batch_size)


def available_sources(patch_dir: str | Path, *, sr: SRCallable | None = None) -> list[str]:
    """Sources :func:`load_patch_series` can build for ``patch_dir`` (``lssr`` only with ``sr``)."""
    p = Path(patch_dir)
    out = []
    if _find(p, "S2_L2A_10m_*.nc") and _find(p, "S2_L2A_20m_*.nc"):
        out.append("s2")
    if _find(p, "L8_SR_10m_*.nc"):
        out += ["nearest30", "bicubic"] + (["lssr"] if sr is not None else [])
    return out


def load_patch_series(
    patch_dir: str | Path, source: str, *, sr: SRCallable | None = None, s2_nir: str = "B8A"
) -> PatchSeries:
    """Build the (T, 6, H, W) 10 m reflectance series of a WorldCereal patch from ``source``.

    ``s2_nir``: ``"B8A"`` (default; the narrow NIR that HLS S30 and Landsat B05 correspond to,
    20 m) or ``"B08"`` (10 m broad NIR). ``sr`` is required for ``source="lssr"``.
    """
    p = Path(patch_dir)
    if source not in SOURCES:
        raise ConfigError(f"unknown feature source {source!r}; valid: {list(SOURCES)}")
    if not p.is_dir():
        raise MissingDataError(f"patch folder {p} does not exist")
    if source == "s2":
        return _s2(p, s2_nir)
    if source == "lssr" and sr is None:
        raise ConfigError(
            "source 'lssr' needs a super-resolution callable (sr=...); without one the available "
            f"sources for {p.name} are {available_sources(p)}"
        )
    nn = _landsat_nn(p)
    if source == "nearest30":
        return nn
    if source == "bicubic":
        return _bicubic(nn)
    return _lssr(nn, sr)  # type: ignore[arg-type]
