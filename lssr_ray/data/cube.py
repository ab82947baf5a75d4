"""The aligned input cube: every chip's inputs on one grid, written as a georeferenced Zarr store.

For each chip the granules of one local solar day are fused per pixel by clear-sky quality
(:mod:`lssr_ray.data.mosaic`); given several days (``dates=clearest``) the day whose mosaic is
clearest on the chip is used (earliest on ties). Chips are read in lattice blocks: each band of
a granule is read once per block, fused, and cut into chips; aux layers are warped once per
block onto the block's 10 m window and cut the same way. Chips with no clear pixel in any
granule are skipped (``all_cloud``, or ``nodata`` when no granule has data there) and recorded.

Store layout (Zarr v2 so GDAL 3.10 can open it, CRS + transform via rioxarray):

* group ``lr_30m`` on the 30 m input grid: ``lr`` (band, y, x) float32 reflectance in
  OUTPUT_BANDS order (NaN = nodata/cloud), ``clear`` (y, x) uint8, ``month`` (y, x) uint8 (0 = none);
* group ``aux_10m`` on the 10 m output grid: ``dem`` (y, x) m, ``landcover`` (y, x) int16,
  ``sar`` (pol, y, x) dB;
* ``chips.json``: one record per chip (id, windows, bounds, contributing granules and sensors,
  solar day, clear fraction, skip reason).

Only chip cores are written, so each core is one chunk (``stride`` px at 30 m, ``stride*3`` at 10 m).
The cube is assembled in memory before writing: about 17 bytes per 10 m pixel (6 x 4 B / 9 for
``lr`` at 30 m, 4 B DEM, 2 B land cover, 8 B SAR), i.e. ~2 GB for a full 110 km HLS tile.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine

from lssr_ray.config import OUTPUT_BANDS, GridConfig
from lssr_ray.data.aux import AUX_KINDS, SAR_MAX_GAP_DAYS, AuxArrays, AuxSource, read_aux
from lssr_ray.data.aux_stac import aux_from_catalog
from lssr_ray.data.coverage import covered_part, granule_overlaps, search_granules
from lssr_ray.data.grid import Chip, ChipPlan, group_chips, union_window
from lssr_ray.data.mosaic import DayMosaic, clearest_cut, mosaic_days
from lssr_ray.data.readers import LowRes, read_lowres
from lssr_ray.errors import MissingDataError, read_skip_reason


class GranuleLike(Protocol):
    """What the cube needs from a catalog granule (``lssr_ray.data.catalog.Granule``)."""

    id: str
    collection: str
    datetime: Any
    crs: Any
    transform: Any
    shape: tuple[int, int]
    assets: Mapping[str, str]


@dataclass(frozen=True)
class ChipRecord:
    """What happened to one chip in the data stage."""

    chip_id: str
    """Stable chip id."""
    input_window: tuple[int, int, int, int]
    """(row_off, col_off, h, w) on the 30 m input grid, halo included."""
    bounds: tuple[float, float, float, float]
    """(left, bottom, right, top) metres in the grid CRS, halo included."""
    granule_id: str | None = None
    """Top-ranked granule that contributed clear pixels to the chip (None if skipped)."""
    month: int = 0
    """Month 1..12 of the chip's solar day (0 if none)."""
    clear_fraction: float = 0.0
    """Fraction of clear 30 m pixels in the chip window (halo included) in the day's mosaic."""
    data_fraction: float = 0.0
    """Fraction of the chip window some granule of the day has data for (cloudy or clear)."""
    present: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """1 where dem / landcover / sar exist for the chip."""
    skipped: str | None = None
    """ChipSkipped reason token (``all_cloud``, ``nodata``, ``corrupt_source``...) or None."""
    detail: str = ""
    """Human-readable detail of a skip or of granules that failed to read."""
    granules: tuple[str, ...] = ()
    """Every granule that gave the chip a clear pixel, mosaic rank order (:mod:`lssr_ray.data.mosaic`)."""
    sensor: str = ""
    """Sensors of :attr:`granules`: ``"L30"``, ``"S30"`` or ``"L30+S30"``."""
    solar_day: str = ""
    """Local solar day (ISO date) of the chip's mosaic."""


@dataclass
class CubeResult:
    """Result of :func:`build_cube`."""

    path: Path
    """Zarr store written."""
    plan: ChipPlan
    """The chip plan used."""
    records: list[ChipRecord] = field(default_factory=list)
    """One record per chip, plan order."""
    n_granules: int = 0
    """Granules the catalog search returned."""
    wall_s: float = 0.0
    """Wall time of the data stage in seconds."""

    @property
    def skipped(self) -> list[ChipRecord]:
        """Records of skipped chips."""
        return [r for r in self.records if r.skipped]

    def table(self) -> str:
        """One line per chip: id, input window, bounds, granule, clear fraction, status."""
        lines = [(f"{'chip':<10} {'input window (row,col,h,w)':<28} {'bounds (m)':<44} {'clear':>6} {'data':>5}"
                  "  granule / status")]
        for r in self.records:
            b = ", ".join(f"{v:.0f}" for v in r.bounds)
            status = f"SKIPPED {r.skipped}: {r.detail}" if r.skipped else f"{','.join(r.granules) or r.granule_id} (month {r.month})"
            lines.append(f"{r.chip_id:<10} {r.input_window!s:<28} ({b}){'':<2} "
                         f"{r.clear_fraction:6.2f} {r.data_fraction:5.2f}  {status}")
        return "\n".join(lines)

    def summary(self) -> str:
        """Chips processed/skipped (with reasons), km², wall time and the store path."""
        reasons: dict[str, int] = {}
        for r in self.skipped:
            reasons[r.skipped] = reasons.get(r.skipped, 0) + 1  # type: ignore[index]
        why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "none"
        ok = len(self.records) - len(self.skipped)
        return (
            f"data stage: {ok}/{len(self.records)} chips read, {len(self.skipped)} skipped ({why}); "
            f"{self.n_granules} granules; AOI {self.plan.aoi_area_km2:.2f} km2, grid {self.plan.grid.area_km2:.2f} km2; "
            f"{self.wall_s:.1f} s -> {self.path}"
        )


def read_chips(plan: ChipPlan, granules: Sequence[Any], *, aux: AuxSource | None = None,
               block: int = 4) -> Iterator[tuple[ChipRecord, dict[str, np.ndarray] | None]]:
    """Yield ``(record, inputs)`` per chip, plan order; ``inputs`` is None for a skipped chip.

    Per block of ``block`` x ``block`` chips each granule band and each aux layer is read
    once over the block's window and cut into chips. ``inputs`` follows the batch contract of
    docs/ARCHITECTURE.md without the batch axis: ``chip_id``, ``lr`` (6, h, w), ``clear``
    (h, w) bool, ``dem`` (1, 3h, 3w), ``landcover`` (1, 3h, 3w), ``sar`` (2, 3h, 3w),
    ``month``, ``present`` (3,).
    """
    aux = aux or AuxSource()
    for group in group_chips(plan, block=block):
        win = union_window([c.input_window for c in group])
        blocks: list[tuple[Any, LowRes]] = []
        failures: list[MissingDataError] = []  # their classes give the skip reason
        for g in granules:
            if not granule_overlaps(g, plan.grid, win):
                continue
            try:
                blocks.append((g, read_lowres(g, plan.grid, window=win)))
            except MissingDataError as exc:
                failures.append(exc)
        days = mosaic_days(blocks, plan.grid.crs)  # fused per pixel, one per solar day
        chosen = [_choose(chip, days, failures) for chip in group]
        # aux: one read per distinct layer set (SAR scene depends on the chip's date)
        aux_cut: dict[str, AuxArrays] = {}
        by_layers: dict[tuple, list[Chip]] = {}
        where = aux.block_bounds(plan.grid, union_window([c.output_window for c in group]))
        for chip, (_, best, when) in zip(group, chosen):
            if best is not None:
                by_layers.setdefault(_key(aux.layers_for(when, where)), []).append(chip)
        for key, chips in by_layers.items():
            ow = union_window([c.output_window for c in chips])
            t = plan.grid.output_transform @ Affine.translation(ow[1], ow[0])
            arr = read_aux(dict(key), plan.grid.crs, transform=t, shape=(ow[2], ow[3]), **aux.read_options())
            for c in chips:
                aux_cut[c.id] = _cut_aux(arr, ow, c.output_window)
        for chip, (rec, best, _) in zip(group, chosen):
            if best is None:
                yield rec, None
                continue
            a = aux_cut[chip.id]
            rec = dataclasses.replace(rec, present=tuple(float(v) for v in a.present))
            yield rec, {
                "chip_id": np.asarray(chip.id),
                "lr": best.lr,
                "clear": best.clear,
                "dem": a.dem,
                "landcover": a.landcover,
                "sar": a.sar,
                "month": np.asarray(best.month, np.int64),
                "present": a.present,
            }


def _key(layers: Mapping[str, Any]) -> tuple:
    def frozen(v: Any) -> Any:
        return tuple(frozen(x) for x in v) if isinstance(v, (list, tuple)) else v
    return tuple(sorted((k, frozen(v)) for k, v in layers.items()))


def _cut_aux(a: AuxArrays, outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> AuxArrays:
    r, c = inner[0] - outer[0], inner[1] - outer[1]
    sl = (slice(None), slice(r, r + inner[2]), slice(c, c + inner[3]))
    dem, lc, sar = a.dem[sl], a.landcover[sl], a.sar[sl]
    present = np.array([np.isfinite(dem).any(), (lc != 0).any(), np.isfinite(sar).any()], np.float32)
    return AuxArrays(dem, lc, sar, present)


def _choose(chip: Chip, days: list[DayMosaic], failures: list[MissingDataError]) -> tuple[ChipRecord, LowRes | None, Any]:
    """The chip cut from its clearest solar-day mosaic (one day for ``dates=all``), or a skip record."""
    rec = {"chip_id": chip.id, "input_window": tuple(chip.input_window), "bounds": tuple(chip.bounds)}
    if not days:
        detail = "; ".join(map(str, failures)) or "no granule overlaps the chip"
        return ChipRecord(**rec, skipped=read_skip_reason(failures), detail=detail), None, None
    best = clearest_cut(days, chip.input_window)
    if best.lowres.clear_fraction == 0.0:
        seen = any(bool(d.lowres.cut(chip.input_window).observed.any()) for d in days)
        ids = [g for d in days for g in d.granules]
        return ChipRecord(**rec, skipped="all_cloud" if seen else "nodata",
                          detail=f"0 clear pixels in {len(ids)} granule(s): {', '.join(ids)}"), None, None
    low = best.lowres
    return ChipRecord(**rec, granule_id=best.granules[0], month=low.month, clear_fraction=low.clear_fraction,
                      data_fraction=float(low.observed.mean()), detail="; ".join(map(str, failures)), granules=best.granules,
                      sensor=best.sensor, solar_day=best.day.day.isoformat()), low, best.day.when


def build_cube(
    plan: ChipPlan,
    granules: Sequence[Any],
    out: str | Path,
    *,
    aux: AuxSource | None = None,
    block: int = 4,
) -> CubeResult:
    """Read every chip of ``plan`` and write the aligned input cube to ``out/inputs.zarr``."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = plan.grid
    H, W = g.input_shape
    Ho, Wo = g.output_shape
    k = g.scale
    halo = plan.config.overlap // 2
    s = plan.config.stride
    lr = np.full((len(OUTPUT_BANDS), H, W), np.nan, np.float32)
    clear = np.zeros((H, W), np.uint8)
    month = np.zeros((H, W), np.uint8)
    dem = np.full((Ho, Wo), np.nan, np.float32)
    lc = np.zeros((Ho, Wo), np.int16)
    sar = np.full((2, Ho, Wo), np.nan, np.float32)
    result = CubeResult(path=out / "inputs.zarr", plan=plan, n_granules=len(granules))
    for rec, x in read_chips(plan, granules, aux=aux, block=block):
        result.records.append(rec)
        if x is None:
            continue
        r0, c0 = rec.input_window[0] + halo, rec.input_window[1] + halo
        core = (slice(halo, halo + s), slice(halo, halo + s))
        lr[:, r0 : r0 + s, c0 : c0 + s] = x["lr"][:, core[0], core[1]]
        clear[r0 : r0 + s, c0 : c0 + s] = x["clear"][core]
        month[r0 : r0 + s, c0 : c0 + s] = np.where(x["clear"][core], int(x["month"]), 0)
        o, so = halo * k, s * k
        R0, C0 = r0 * k, c0 * k
        dem[R0 : R0 + so, C0 : C0 + so] = x["dem"][0, o : o + so, o : o + so]
        lc[R0 : R0 + so, C0 : C0 + so] = x["landcover"][0, o : o + so, o : o + so]
        sar[:, R0 : R0 + so, C0 : C0 + so] = x["sar"][:, o : o + so, o : o + so]

    def coords(transform: Any, h: int, w: int) -> dict[str, np.ndarray]:
        return {"y": transform.f + (np.arange(h) + 0.5) * transform.e,
                "x": transform.c + (np.arange(w) + 0.5) * transform.a}

    c30 = coords(g.input_transform, H, W)
    ds30 = xr.Dataset(
        {"lr": (("band", "y", "x"), lr, {"units": "reflectance", "nodata": "NaN"}),
         "clear": (("y", "x"), clear), "month": (("y", "x"), month, {"nodata": 0})},
        coords={"band": list(OUTPUT_BANDS), **c30},
    )
    c10 = coords(g.output_transform, Ho, Wo)
    ds10 = xr.Dataset(
        {"dem": (("y", "x"), dem, {"units": "m"}), "landcover": (("y", "x"), lc, {"nodata": 0}),
         "sar": (("pol", "y", "x"), sar, {"units": "dB"})},
        coords={"pol": ["VV", "VH"], **c10},
    )
    ch30, ch10 = s, s * k
    for ds, tr, ch, name in ((ds30, g.input_transform, ch30, "lr_30m"), (ds10, g.output_transform, ch10, "aux_10m")):
        ds = ds.rio.write_crs(g.crs).rio.write_transform(tr)
        ds.attrs.update(chip_size=plan.config.chip_size, overlap=plan.config.overlap, scale=k)
        for v in ds.data_vars:  # set on .encoding: an encoding= argument would drop rioxarray's grid_mapping
            if ds[v].ndim >= 2:
                ds[v].encoding["chunks"] = tuple([1] * (ds[v].ndim - 2) + [ch, ch])
        ds.to_zarr(result.path, group=name, mode="w" if name == "lr_30m" else "a", zarr_format=2,
                   consolidated=False)
    import zarr

    zarr.consolidate_metadata(str(result.path), zarr_format=2)
    result.wall_s = time.perf_counter() - t0
    (out / "chips.json").write_text(json.dumps(
        {"grid": {"crs": g.crs, "input_transform": list(g.input_transform)[:6], "input_shape": list(g.input_shape),
                  "scale": k, "config": asdict(plan.config)},
         "chips": [asdict(r) for r in result.records]}, indent=1))
    return result


@dataclass(frozen=True)
class DataStage:
    """Everything decided before any pixel is read: AOI, granules, grid/chips, aux sources."""

    aoi: Any
    """The validated :class:`~lssr_ray.data.aoi.AOI`."""
    granules: tuple[Any, ...]
    """Catalog granules over the AOI in the time range, by date."""
    plan: ChipPlan
    """Chip plan on the grid snapped to the granules' 30 m lattice."""
    aux: AuxSource
    """Aux layer hrefs from the catalog."""
    outside_km2: float = 0.0
    """AOI area no granule footprint covers in the date range (no chips are planned there)."""

    def coverage_note(self) -> str | None:
        """``"outside coverage: N km2 ..."`` when part of the AOI has no granule, else None."""
        if self.outside_km2 <= 0:
            return None
        return (f"outside coverage: {self.outside_km2:.2f} km2 of the AOI's "
                f"{self.outside_km2 + self.aoi.area_km2:.2f} km2 has no granule in the date range; "
                f"chips are planned over the covered {self.aoi.area_km2:.2f} km2 only")


def plan_data_stage(aoi: Any, catalog: Any, *, config: GridConfig | None = None, start: str | None = None,
                    end: str | None = None, collections: Sequence[str] | None = None,
                    aux_stac: str | None = None, aux_collections: Mapping[str, str | None] | None = None) -> DataStage:
    """Search the catalog, snap the grid to the granules' 30 m lattice and plan the chips.

    Chips are planned only over the part of the AOI the granules' footprints cover
    (:func:`covered_part`; the rest is :attr:`DataStage.outside_km2`). The lattice anchor is taken
    from the first granule in the AOI's UTM CRS; granules in another zone are warped onto the grid
    at read time. :class:`CoverageError` if no granule. Aux layers come from ``aux_stac`` (a STAC
    API or item-collection file, :func:`~lssr_ray.data.aux_stac.aux_from_stac`, searched around
    the granules' dates) when given, else from the catalog's own aux collections.
    """
    from lssr_ray.data.grid import anchor_of, plan_chips

    config = config or GridConfig()
    granules = search_granules(catalog, aoi, start=start, end=end, collections=collections)
    aoi, outside_km2 = covered_part(aoi, granules)  # never plan chips where no granule can have data
    same = [g for g in granules if str(g.crs).upper() == aoi.crs.upper()]
    anchor = anchor_of(Affine(*tuple(same[0].transform)[:6])) if same else (0.0, 0.0)
    plan = plan_chips(aoi, config=config, anchor=anchor)
    if aux_stac:
        from lssr_ray.data.aux_stac import aux_from_stac

        times = [g.datetime for g in granules]
        aux = aux_from_stac(aux_stac, aoi, start=min(times, default=None), end=max(times, default=None),
                            collections=aux_collections)
    else:
        aux = aux_from_catalog(catalog, aoi) if hasattr(catalog, "aux_items") else AuxSource()
    return DataStage(aoi=aoi, granules=tuple(granules), plan=plan, aux=aux, outside_km2=outside_km2)


__all__ = [
    "AUX_KINDS",
    "SAR_MAX_GAP_DAYS",
    "AuxSource",
    "ChipRecord",
    "CubeResult",
    "DataStage",
    "GranuleLike",
    "aux_from_catalog",
    "build_cube",
    "plan_data_stage",
    "read_chips",
]
