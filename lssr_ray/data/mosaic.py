"""Per-pixel mosaic of the granules of one local solar day, before chips are cut.

A time step of a mapping run is one **local solar day**: the UTC acquisition time plus the
longitude of the granule footprint's centre / 15 hours (:func:`solar_day`). Landsat and
Sentinel-2 cross at about 10-11 h local solar time, near UTC midnight around 150-165 E, where a
UTC date can split one morning's granules (L30 and S30, adjacent MGRS tiles) into two steps or
join two mornings; the solar day does neither.

Within one solar day, every granule read over a block (:class:`~lssr_ray.data.readers.LowRes`)
is fused per pixel (:func:`mosaic_day`): a pixel takes the reflectance of the highest-ranked
granule that is clear there, so a hole in one granule (cloud, swath edge, tile edge) is filled
from any other granule of the day that sees the ground. The rank (:func:`granule_rank`), best
first, is deterministic and does not depend on how chips are grouped into read blocks:

1. granules in the output grid's own CRS (their pixels are plain windowed reads, no resampling)
   before granules warped from a neighbouring UTM zone;
2. sensor policy :data:`SENSOR_ORDER`: L30 before S30. The model was trained on Landsat inputs;
   HLS S30 is band-pass and BRDF adjusted to L30, so it is the gap filler, not the first choice;
3. lower ``eo:cloud_cover`` (the granule's own cloud percentage; a missing value ranks last):
   the granule with less cloud has less haze and cloud-adjacent contamination;
4. granule id (alphabetical), so equal ranks resolve the same way on every run.

A pixel that no granule sees clear stays NaN (not clear); a chip is skipped only when no
granule of the day has a clear pixel in it. :data:`MOSAIC_VERSION` is recorded in the store's
``mosaic_version`` attribute.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lssr_ray.data.readers import LowRes

MOSAIC_VERSION = 1
"""Version of the time-step and fusion rules (solar day, per-pixel rank), recorded in the store."""
SENSOR_ORDER = ("L30", "S30")
"""Same-day sensor policy: earlier wins where both are clear (unknown sensors rank after these)."""


def sensor_of(granule: Any) -> str:
    """``"L30"`` / ``"S30"`` from the granule's collection (``HLSL30_2.0``, ``HLSS30``...) or id."""
    text = f"{getattr(granule, 'collection', '')} {getattr(granule, 'id', '')}".upper()
    for product in SENSOR_ORDER:
        if product in text:
            return product
    return "other"


def footprint_lon(granule: Any) -> float:
    """Longitude in degrees (-180, 180] of the centre of the granule's WGS 84 bbox.

    A bbox crossing the antimeridian (``lon_min > lon_max``, RFC 7946) is centred across it.
    """
    west, _, east, _ = (float(v) for v in tuple(granule.bbox)[:4])
    if west > east:
        east += 360.0
    lon = ((west + east) / 2.0 + 180.0) % 360.0 - 180.0
    return 180.0 if lon == -180.0 else lon


def solar_day(granule: Any) -> _dt.date:
    """Local solar day of the acquisition: UTC time + footprint-centre longitude / 15 h."""
    when = granule.datetime
    if isinstance(when, str):
        when = _dt.datetime.fromisoformat(when)
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return (when + _dt.timedelta(hours=footprint_lon(granule) / 15.0)).date()


def group_by_solar_day(granules: Sequence[Any]) -> dict[_dt.date, list[Any]]:
    """``{solar day: granules}``, days ascending, granules in their given order."""
    days: dict[_dt.date, list[Any]] = {}
    for g in granules:
        days.setdefault(solar_day(g), []).append(g)
    return dict(sorted(days.items()))


def granule_rank(granule: Any, grid_crs: str) -> tuple:
    """Sort key, best first: native CRS, sensor policy, ``eo:cloud_cover``, id (module doc)."""
    from rasterio.crs import CRS

    native = CRS.from_user_input(granule.crs) == CRS.from_user_input(grid_crs)
    sensor = sensor_of(granule)
    order = SENSOR_ORDER.index(sensor) if sensor in SENSOR_ORDER else len(SENSOR_ORDER)
    cover = (getattr(granule, "properties", None) or {}).get("eo:cloud_cover")
    return (not native, order, float(cover) if cover is not None else float("inf"), str(granule.id))


def sensor_label(granule_ids: Sequence[str], sensors: Sequence[str]) -> str:
    """``"L30"``, ``"S30"`` or ``"L30+S30"``: the sensors of the contributing granules, policy order."""
    used = {s for gid, s in zip(granule_ids, sensors) if gid}
    return "+".join(sorted(used, key=lambda s: (SENSOR_ORDER + (s,)).index(s)))


@dataclass(frozen=True)
class DayMosaic:
    """The fused 30 m inputs of one solar day on a block window, and which granule gave each pixel."""

    day: _dt.date
    """Local solar day."""
    lowres: LowRes
    """Fused reflectance / clear / observed (``granule_id``: the top-ranked granule's id)."""
    source: np.ndarray
    """int16 (h, w): index into :attr:`granules` of the granule each clear pixel came from, -1 none."""
    granules: tuple[str, ...]
    """Granule ids, rank order."""
    sensors: tuple[str, ...]
    """Sensor of each granule in :attr:`granules`."""
    when: Any
    """Acquisition datetime of the top-ranked granule (picks the SAR scene)."""

    def cut(self, window: tuple[int, int, int, int]) -> tuple[LowRes, tuple[str, ...], str]:
        """(chip inputs, contributing granule ids in rank order, sensor label) on a sub-window."""
        low = self.lowres.cut(window)
        r, c = window[0] - self.lowres.window[0], window[1] - self.lowres.window[1]
        src = self.source[r : r + window[2], c : c + window[3]]
        used = sorted(int(i) for i in np.unique(src) if i >= 0)
        ids = tuple(self.granules[i] for i in used)
        return low, ids, sensor_label(ids, [self.sensors[i] for i in used])


def mosaic_day(day: _dt.date, blocks: Sequence[tuple[Any, LowRes]], grid_crs: str) -> DayMosaic:
    """Fuse one solar day's granule blocks (same window) per pixel by :func:`granule_rank`."""
    if not blocks:
        raise ValueError("mosaic_day needs at least one granule block")
    ranked = sorted(blocks, key=lambda b: granule_rank(b[0], grid_crs))
    first = ranked[0][1]
    lr = np.full_like(first.lr, np.nan)
    clear = np.zeros_like(first.clear)
    observed = np.zeros_like(first.observed)
    source = np.full(first.clear.shape, -1, np.int16)
    for i, (_, low) in enumerate(ranked):
        if low.window != first.window:
            raise ValueError(f"granule blocks differ in window: {low.window} != {first.window}")
        take = low.clear & ~clear
        lr[:, take] = low.lr[:, take]
        source[take] = i
        clear |= take
        observed |= low.observed
    fused = LowRes(lr, clear, observed, day.month, str(ranked[0][0].id), first.window)
    return DayMosaic(day, fused, source, tuple(str(g.id) for g, _ in ranked),
                     tuple(sensor_of(g) for g, _ in ranked), ranked[0][0].datetime)


@dataclass(frozen=True)
class ChipCut:
    """A chip's inputs cut from one day's mosaic."""

    day: DayMosaic
    """The day the inputs come from."""
    lowres: LowRes
    """Fused inputs on the chip window."""
    granules: tuple[str, ...]
    """Granules that gave the chip a clear pixel, rank order."""
    sensor: str
    """Their sensor label (:func:`sensor_label`)."""


def clearest_cut(days: Sequence[DayMosaic], window: tuple[int, int, int, int]) -> ChipCut:
    """The cut of ``window`` from the day whose mosaic is clearest there (earliest day on ties)."""
    cuts = [ChipCut(d, *d.cut(window)) for d in days]
    return max(cuts, key=lambda c: c.lowres.clear_fraction)  # max keeps the first on ties


def mosaic_days(blocks: Sequence[tuple[Any, LowRes]], grid_crs: str) -> list[DayMosaic]:
    """One :class:`DayMosaic` per solar day of ``blocks``, days ascending."""
    by_day: dict[_dt.date, list[tuple[Any, LowRes]]] = {}
    for g, low in blocks:
        by_day.setdefault(solar_day(g), []).append((g, low))
    return [mosaic_day(d, bl, grid_crs) for d, bl in sorted(by_day.items())]


def time_provenance(granules_by_time: dict[int, Sequence[Any]]) -> dict[str, list[str]]:
    """Per time step: ``sensor`` (``"L30"``, ``"S30"``, ``"L30+S30"``) and ``granules``
    (comma-separated ids, rank-free alphabetical order) of the granules that feed its mosaic."""
    steps = [sorted(granules_by_time[t], key=lambda g: str(g.id)) for t in sorted(granules_by_time)]
    return {"sensor": [sensor_label([str(g.id) for g in gs], [sensor_of(g) for g in gs]) for gs in steps],
            "granules": [",".join(str(g.id) for g in gs) for gs in steps]}


__all__ = [
    "MOSAIC_VERSION",
    "SENSOR_ORDER",
    "ChipCut",
    "DayMosaic",
    "clearest_cut",
    "footprint_lon",
    "granule_rank",
    "group_by_solar_day",
    "mosaic_day",
    "mosaic_days",
    "sensor_label",
    "sensor_of",
    "solar_day",
    "time_provenance",
]
