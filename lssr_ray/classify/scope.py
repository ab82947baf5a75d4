"""Where a crop-type classifier applies: the region, season and classes it was trained on.

A classifier learns one region's crops in one crop calendar. Applied to another region (an Iowa
store and the bundled Flanders model) it still paints every pixel with one of its own classes, a
confident-looking map of crops that are not there. So every saved classifier records its scope
in ``meta.json`` under ``"scope"``::

    {"region":  {"bbox": [west, south, east, north],   # WGS84 degrees, the training pixels
                 "margin_km": 50.0},                    # how far beyond it the model is taken to hold
     "season":  {"start_month": 11, "n_months": 12,     # monthly feature slot m00 = November
                 "observed_months": [2, 6, 7, 8, 10, 11],  # calendar months it saw observations in
                 "trained_dates": ["2017-11-19", "2018-10-21"]},
     "classes": {"scheme": "WorldCereal crop type", "codes": [...], "names": [...]}}

:func:`check_scope` compares a store (its WGS84 footprint and dates) with that record. Outside
the region, or with no store date in a month the classifier saw, it raises
:class:`~lssr_ray.errors.ConfigError` unless the classifier was chosen explicitly; then it returns
the problem as a warning for the store. The season start is anchored on the classifier's
``start_month`` (:func:`season_start`), so a store of one July fills slot m08 of a
November-to-October model, not slot m11.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.errors import ConfigError

__all__ = [
    "MARGIN_KM",
    "ClassifierScope",
    "ScopeCheck",
    "check_classifier_applies",
    "check_scope",
    "grid_bbox_wgs84",
    "read_scope",
    "season_months",
    "season_start",
]

MARGIN_KM = 50.0
"""Default distance beyond the training footprint within which a classifier is taken to apply
(same climate and crop calendar); set per model at training time (``--margin-km``)."""
_KM_PER_DEGREE = 111.32  # one degree of latitude; of longitude times cos(latitude)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class ClassifierScope:
    """The region, season and classes one classifier was trained on (``meta["scope"]``)."""

    bbox: tuple[float, float, float, float]
    """WGS84 (west, south, east, north) degrees of the training pixels."""
    start_month: int
    """Calendar month (1-12) of the first monthly feature slot (m00)."""
    n_months: int
    """Season length in months (feature slots)."""
    observed_months: tuple[int, ...]
    """Calendar months (1-12) with training observations inside the season."""
    scheme: str
    """Label scheme of the codes, e.g. ``"WorldCereal crop type"`` or ``"USDA CDL"``."""
    codes: tuple[int, ...] = ()
    """Class codes the model predicts."""
    names: tuple[str, ...] = ()
    """Name of each code."""
    margin_km: float = MARGIN_KM
    """How far beyond :attr:`bbox` the classifier is taken to apply."""
    trained_dates: tuple[str, str] | None = None
    """First and last training date used (``YYYY-MM-DD``)."""

    def __post_init__(self) -> None:
        w, s, e, n = self.bbox
        if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
            raise ConfigError(f"classifier region bbox {self.bbox} is not (west, south, east, north) in degrees")
        if not 1 <= self.start_month <= 12 or self.n_months < 1 or self.margin_km < 0:
            raise ConfigError(f"classifier season start_month {self.start_month} / n_months {self.n_months} / "
                              f"margin_km {self.margin_km} out of range")
        if len(self.codes) != len(self.names):
            raise ConfigError(f"classifier scope lists {len(self.codes)} codes but {len(self.names)} names")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``meta.json`` (see the module docstring)."""
        return {
            "region": {"bbox": [round(float(v), 6) for v in self.bbox], "margin_km": self.margin_km},
            "season": {"start_month": self.start_month, "n_months": self.n_months,
                       "observed_months": list(self.observed_months),
                       "trained_dates": list(self.trained_dates) if self.trained_dates else None},
            "classes": {"scheme": self.scheme, "codes": list(self.codes), "names": list(self.names)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifierScope:
        try:
            reg, sea, cl = d["region"], d["season"], d.get("classes", {})
            dates = sea.get("trained_dates")
            return cls(bbox=tuple(float(v) for v in reg["bbox"]),  # type: ignore[arg-type]
                       margin_km=float(reg.get("margin_km", MARGIN_KM)), start_month=int(sea["start_month"]),
                       n_months=int(sea["n_months"]), observed_months=tuple(int(m) for m in sea["observed_months"]),
                       scheme=str(cl.get("scheme", "unknown")), codes=tuple(int(c) for c in cl.get("codes", ())),
                       names=tuple(str(n) for n in cl.get("names", ())),
                       trained_dates=tuple(dates) if dates else None)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"classifier scope record is malformed ({exc!r}): {dict(d)}") from exc

    def region_with_margin(self) -> tuple[float, float, float, float]:
        """:attr:`bbox` widened by :attr:`margin_km` on every side (degrees)."""
        w, s, e, n = self.bbox
        dlat = self.margin_km / _KM_PER_DEGREE
        coslat = max(np.cos(np.radians(max(abs(s), abs(n)))), 0.01)
        dlon = dlat / coslat
        return max(w - dlon, -180.0), max(s - dlat, -90.0), min(e + dlon, 180.0), min(n + dlat, 90.0)

    def describe(self) -> str:
        """One line: scheme, classes, region and season (for messages)."""
        w, s, e, n = self.bbox
        months = ", ".join(_MONTHS[m - 1] for m in sorted(self.observed_months))
        return (f"{self.scheme}, {len(self.codes)} classes, trained on lon {w:.3f}..{e:.3f} lat {s:.3f}..{n:.3f} "
                f"(+{self.margin_km:g} km), season from {_MONTHS[self.start_month - 1]} for {self.n_months} "
                f"months with observations in {months}")


@dataclass
class ScopeCheck:
    """What :func:`check_scope` found."""

    season_start: str
    """``YYYY-MM`` of the season the store's features use."""
    warnings: list[str] = field(default_factory=list)
    """Problems accepted because the classifier was chosen explicitly, and dates left out."""
    notes: int = 0
    """How many of the last :attr:`warnings` are notes (dates left out), not scope problems."""


def read_scope(folder: str | Path) -> ClassifierScope | None:
    """The scope in ``<folder>/meta.json`` (None for a model saved before scopes were recorded)."""
    p = Path(folder) / "meta.json"
    meta = json.loads(p.read_text()) if p.is_file() else {}
    return ClassifierScope.from_dict(meta["scope"]) if "scope" in meta else None


def season_start(times: Sequence[Any] | np.ndarray, n_months: int, start_month: int | None = None) -> str:
    """``YYYY-MM`` of the season holding the store's last date.

    Without ``start_month``: the ``n_months`` ending with the last date's month (the rule of
    models saved before scopes were recorded). With it: the latest month of that calendar month
    not after the last date, so every date lands in the feature slot of its calendar month.
    """
    last = np.asarray(times, "datetime64[ns]").max().astype("datetime64[M]")
    if start_month is None:
        return str(last - np.timedelta64(int(n_months) - 1, "M"))
    back = (int(last.astype(np.int64)) % 12 + 1 - int(start_month)) % 12
    return str(last - np.timedelta64(back, "M"))


def grid_bbox_wgs84(crs: Any, transform: Any, shape: tuple[int, int],
                    mask: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """WGS84 (west, south, east, north) of a north-up grid, or of its ``mask`` pixels only."""
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    h, w = shape
    r0, r1, c0, c1 = 0, h, 0, w
    if mask is not None:
        rows, cols = np.nonzero(np.asarray(mask, bool))
        if rows.size == 0:
            raise ConfigError("no pixel selected: the training footprint is empty")
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    from affine import Affine

    t = Affine(*tuple(transform)[:6]) * Affine.translation(c0, r0)
    west, south, east, north = array_bounds(r1 - r0, c1 - c0, t)
    return tuple(float(v) for v in transform_bounds(crs, "EPSG:4326", west, south, east, north,
                                                    densify_pts=21))  # type: ignore[return-value]


def season_months(times: np.ndarray, start: str, n_months: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside, calendar month 1-12) of each of ``times`` for the season ``start`` + ``n_months``."""
    m = np.asarray(times, "datetime64[ns]").astype("datetime64[M]")
    k = (m - np.datetime64(start, "M")).astype(np.int64)
    inside = (k >= 0) & (k < n_months)
    return inside, m.astype(np.int64) % 12 + 1


def check_scope(scope: ClassifierScope | None, *, name: str, bbox: tuple[float, float, float, float],
                times: Sequence[Any] | np.ndarray, n_months: int, explicit: bool) -> ScopeCheck:
    """Does the classifier ``name`` apply to a store of WGS84 ``bbox`` and ``times``?

    Outside the region (``bbox`` not within the scope's region plus margin) or outside the
    season (no store date inside the season in a month the classifier saw): a
    :class:`ConfigError` when not ``explicit``, a warning in the result when ``explicit``.
    A classifier without a scope is applied with a warning saying it is unchecked.
    """
    times = np.asarray(times, "datetime64[ns]")
    if scope is None:
        start = season_start(times, n_months)
        unchecked = (f"classifier {name} records no region or season (saved before scopes were recorded): "
                     "where it applies is unchecked; retrain it with jobs/train_classifier.py")
        return ScopeCheck(start, [unchecked])
    start = season_start(times, scope.n_months, scope.start_month)
    inside, months = season_months(times, start, scope.n_months)
    problems, notes = [], []
    w, s, e, n = bbox
    rw, rs, re_, rn = scope.region_with_margin()
    if not (w >= rw and e <= re_ and s >= rs and n <= rn):
        problems.append(f"the store (lon {w:.3f}..{e:.3f}, lat {s:.3f}..{n:.3f}) lies outside the region of "
                        f"classifier {name}")
    seen = sorted({int(m) for m in months[inside]} & set(scope.observed_months))
    if not seen:
        got = ", ".join(_MONTHS[m - 1] for m in sorted({int(m) for m in months[inside]})) or "none"
        problems.append(f"none of the store's dates in its season from {start} ({got}) falls in a month "
                        f"classifier {name} saw in training")
    if (~inside).any():
        notes.append(f"{int((~inside).sum())} of {len(times)} store dates lie outside the classifier's season "
                     f"{start} + {scope.n_months} months and are not used for crop_type")
    if problems and not explicit:
        raise ConfigError(
            f"{'; '.join(problems)} ({scope.describe()}). Pass --classifier {name} to apply it anyway (recorded "
            "as a warning in the store), --classifier none to skip crop type, or train one for this region: "
            "python jobs/train_classifier.py --store STORE --labels CDL.tif --save-model DIR"
        )
    warnings = [f"classifier applied outside its scope because it was chosen explicitly: {p} ({scope.describe()})"
                for p in problems]
    return ScopeCheck(start, warnings + notes, notes=len(notes))


def check_classifier_applies(clf: Any, name: str, ds: Any, *, n_months: int, explicit: bool) -> ScopeCheck:
    """:func:`check_scope` of a loaded :class:`~lssr_ray.classify.model.CropClassifier` against
    an opened store (``ds.rio`` grid, ``time``): the crop_type stage calls it before any pixel."""
    scope = ClassifierScope.from_dict(clf.meta["scope"]) if "scope" in clf.meta else None
    bbox = grid_bbox_wgs84(ds.rio.crs, ds.rio.transform(), (ds.sizes["y"], ds.sizes["x"]))
    return check_scope(scope, name=name, bbox=bbox, times=ds["time"].values, n_months=n_months, explicit=explicit)
