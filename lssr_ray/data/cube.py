"""The aligned input cube: every chip's inputs on one grid, written as a georeferenced Zarr store.

For each chip the clearest granule (highest clear fraction on the chip, earliest on ties) of
the catalog search is used. Chips are read in lattice blocks: each band of a granule is read
once per block and cut into chips (:meth:`lssr_ray.data.readers.LowRes.cut`); aux layers are
warped once per block onto the block's 10 m window and cut the same way. Chips with no clear pixel are skipped (``all_cloud``, or
``nodata`` when no granule has data there) and recorded, never fatal.

Store layout (Zarr v2 so GDAL 3.10 can open it, CRS + transform via rioxarray):

* group ``lr_30m`` on the 30 m input grid: ``lr`` (band, y, x) float32 reflectance in
  OUTPUT_BANDS order (NaN = nodata/cloud), ``clear`` (y, x) uint8, ``month`` (y, x) uint8 (0 = none);
* group ``aux_10m`` on the 10 m output grid: ``dem`` (y, x) m, ``landcover`` (y, x) int16,
  ``sar`` (pol, y, x) dB;
* ``chips.json``: one record per chip (id, windows, bounds, granule, clear fraction, skip reason).

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
from lssr_ray.data.aux import AUX_KINDS, AuxArrays, read_aux
from lssr_ray.data.coverage import covered_part, granule_overlaps, search_granules
from lssr_ray.data.grid import Chip, ChipPlan, group_chips, union_window
from lssr_ray.data.readers import LowRes, read_lowres
from lssr_ray.errors import ChipSkipped, MissingDataError, read_skip_reason


class GranuleLike(Protocol):
    """What the cube needs from a catalog granule (``lssr_ray.data.catalog.Granule``)."""

    id: str
    collection: str
    datetime: Any
    crs: Any
    transform: Any
    shape: tuple[int, int]
    assets: Mapping[str, str]


SAR_MAX_GAP_DAYS = 16.0
"""A Sentinel-1 scene is used for a chip only within this many days of its Landsat/HLS date."""


@dataclass(frozen=True)
class AuxSource:
    """Where a chip's aux layers come from."""

    dem: str | None = None
    """DEM href (metres), or None."""
    landcover: str | None = None
    """Land-cover class-index href, or None."""
    sar: tuple[tuple[Any, tuple[str, str]], ...] = ()
    """Sentinel-1 scenes as ``(datetime, (vv_href, vh_href))``; the nearest in time is used."""
    sar_max_gap_days: float = SAR_MAX_GAP_DAYS
    """Largest |SAR date - granule date| in days; beyond it the chip gets no SAR (present 0)."""

    def layers_for(self, when: Any) -> dict[str, Any]:
        """The ``read_aux`` layer mapping for a granule acquired at ``when`` (aware datetime)."""
        layers: dict[str, Any] = {"dem": self.dem, "landcover": self.landcover, "sar": None}
        if self.sar and when is not None:
            gap, pair = min(((abs((t - when).total_seconds()) / 86400, p) for t, p in self.sar), key=lambda x: x[0])
            if gap <= self.sar_max_gap_days:
                layers["sar"] = pair
        return layers


def aux_from_catalog(catalog: Any, aoi: Any) -> AuxSource:
    """Aux hrefs over the AOI from an archive catalog (``lssr_ray.data.catalog.Catalog``).

    DEM and land cover: the first item overlapping the AOI (one tile per AOI; several tiles
    would need a mosaic). Sentinel-1: every overlapping scene, chosen per chip by date.
    """
    def first(kind: str, key: str) -> str | None:
        items = catalog.aux_items(aoi.geometry, kind)
        return items[0].assets.get(key) if items else None

    sar = tuple((it.datetime, (it.assets["VV"], it.assets["VH"]))
                for it in catalog.aux_items(aoi.geometry, "sentinel1") if {"VV", "VH"} <= set(it.assets))
    return AuxSource(dem=first("dem", "elevation"), landcover=first("landcover", "landcover"), sar=sar)


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
    """Granule chosen for the chip (None if skipped before choosing)."""
    month: int = 0
    """Acquisition month 1..12 of the chosen granule (0 if none)."""
    clear_fraction: float = 0.0
    """Fraction of clear 30 m pixels in the chip window (halo included) for the chosen granule."""
    data_fraction: float = 0.0
    """Fraction of the chip window the chosen granule has data for (cloudy or clear)."""
    present: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """1 where dem / landcover / sar exist for the chip."""
    skipped: str | None = None
    """ChipSkipped reason token (``all_cloud``, ``nodata``, ``corrupt_source``...) or None."""
    detail: str = ""
    """Human-readable detail of a skip or of granules that failed to read."""


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
            status = f"SKIPPED {r.skipped}: {r.detail}" if r.skipped else f"{r.granule_id} (month {r.month})"
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


def read_chips(
    plan: ChipPlan,
    granules: Sequence[Any],
    *,
    aux: AuxSource | None = None,
    block: int = 4,
) -> Iterator[tuple[ChipRecord, dict[str, np.ndarray] | None]]:
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
        chosen = [_choose(chip, blocks, failures) for chip in group]
        # aux: one read per distinct layer set (SAR scene depends on the chip's date)
        aux_cut: dict[str, AuxArrays] = {}
        by_layers: dict[tuple, list[Chip]] = {}
        for chip, (_, best, when) in zip(group, chosen):
            if best is not None:
                by_layers.setdefault(_key(aux.layers_for(when)), []).append(chip)
        for key, chips in by_layers.items():
            ow = union_window([c.output_window for c in chips])
            t = plan.grid.output_transform @ Affine.translation(ow[1], ow[0])
            arr = read_aux(dict(key), plan.grid.crs, transform=t, shape=(ow[2], ow[3]))
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
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in layers.items()))


def _cut_aux(a: AuxArrays, outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> AuxArrays:
    r, c = inner[0] - outer[0], inner[1] - outer[1]
    sl = (slice(None), slice(r, r + inner[2]), slice(c, c + inner[3]))
    dem, lc, sar = a.dem[sl], a.landcover[sl], a.sar[sl]
    present = np.array([np.isfinite(dem).any(), (lc != 0).any(), np.isfinite(sar).any()], np.float32)
    return AuxArrays(dem, lc, sar, present)


def _choose(chip: Chip, blocks: list[tuple[Any, LowRes]], failures: list[MissingDataError]) -> tuple[ChipRecord, LowRes | None, Any]:
    """The clearest granule for ``chip`` (earliest on ties), or a skip record."""
    rec = {"chip_id": chip.id, "input_window": tuple(chip.input_window), "bounds": tuple(chip.bounds)}
    try:
        if not blocks:
            detail = "; ".join(map(str, failures)) or "no granule overlaps the chip"
            raise ChipSkipped(chip.id, read_skip_reason(failures), detail)
        cuts = [b.cut(chip.input_window) for _, b in blocks]
        i_best = max(range(len(cuts)), key=lambda i: cuts[i].clear_fraction)  # max keeps the first on ties
        best = cuts[i_best]
        if best.clear_fraction == 0.0:
            has_data = any(bool(c.observed.any()) for c in cuts)
            raise ChipSkipped(
                chip.id, "all_cloud" if has_data else "nodata",
                f"0 clear pixels in {len(cuts)} granule(s): {', '.join(c.granule_id for c in cuts)}",
            )
    except ChipSkipped as skip:
        return ChipRecord(**rec, skipped=skip.reason, detail=skip.detail), None, None
    record = ChipRecord(**rec, granule_id=best.granule_id, month=best.month, clear_fraction=best.clear_fraction,
                        data_fraction=float(best.observed.mean()), detail="; ".join(map(str, failures)))
    return record, best, blocks[i_best][0].datetime


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
                    end: str | None = None, collections: Sequence[str] | None = None) -> DataStage:
    """Search the catalog, snap the grid to the granules' 30 m lattice and plan the chips.

    Chips are planned only over the part of the AOI the granules' footprints cover
    (:func:`covered_part`; the rest is :attr:`DataStage.outside_km2`). The lattice anchor is taken
    from the first granule in the AOI's UTM CRS; granules in another zone are warped onto the grid
    at read time. :class:`CoverageError` if no granule.
    """
    from lssr_ray.data.grid import anchor_of, plan_chips

    config = config or GridConfig()
    granules = search_granules(catalog, aoi, start=start, end=end, collections=collections)
    aoi, outside_km2 = covered_part(aoi, granules)  # never plan chips where no granule can have data
    same = [g for g in granules if str(g.crs).upper() == aoi.crs.upper()]
    anchor = anchor_of(Affine(*tuple(same[0].transform)[:6])) if same else (0.0, 0.0)
    plan = plan_chips(aoi, config=config, anchor=anchor)
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
