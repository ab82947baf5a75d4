"""The final summary of a mapping run: counts, areas, rates, skips and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lssr_ray.data.batch import PRESENT_KEYS

if TYPE_CHECKING:
    from lssr_ray.mapping.classify_stage import ClassifyResult


@dataclass
class MapSummary:
    """What one ``run_map`` call did. Rates count only chip-dates computed by *this* run."""

    store: str
    """Output store (local path or s3:// URL)."""
    run_id: str
    """Run id (hash of the run identity, see :func:`lssr_ray.mapping.plan.run_identity`)."""
    engine: str
    """Inference engine used (``torch``, ``onnxruntime``, ``tensorrt``)."""
    chips: int
    """Chips in the plan (chip cores touching the AOI)."""
    n_times: int
    """Time steps in the store."""
    chip_dates: int
    """Work items in total: chips x dates."""
    computed: int = 0
    """Chip-dates predicted and committed by this run."""
    resumed: int = 0
    """Chip-dates already committed before this run started (not recomputed)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped chip-dates by reason (``all_cloud``, ``nodata``, ``corrupt_source``, ...), this run."""
    skip_examples: list[str] = field(default_factory=list)
    """Up to 20 skip lines ``chip date reason: detail``."""
    chunks_written: int = 0
    """Output chunks written by the blend stage."""
    chunk_km2: float = 0.0
    """Area of one output chunk (chip core) in km^2."""
    aoi_km2: float = 0.0
    """AOI area in km^2."""
    wall_s: float = 0.0
    """Wall time of the whole run in seconds (planning, Ray start, both stages, quicklooks)."""
    stage1_s: float = 0.0
    """Wall time of stage 1 (read -> LSSR -> commit) in seconds."""
    stage2_s: float = 0.0
    """Wall time of stage 2 (blend -> write) in seconds."""
    quicklooks: list[str] = field(default_factory=list)
    """Quicklook PNGs written."""
    warnings: list[str] = field(default_factory=list)
    """Warnings (e.g. untrained adapters); also recorded in the store attributes."""
    crop_type: ClassifyResult | None = None
    """What the crop_type stage wrote, or None when it was skipped (``--classifier none`` or no
    bundled classifier; the store's ``crop_type_note`` attribute says why)."""
    modalities: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per date ``{"chips": predicted chips, "dem": n, "landcover": n, "sar": n}``: how many of
    the date's predicted chips had each aux layer (all committed chips, resumed ones included);
    also the store's ``modalities`` attribute."""

    @property
    def ok(self) -> int:
        """Chip-dates predicted by this run (computed minus skips)."""
        return self.computed - sum(self.skipped.values())

    @property
    def km2(self) -> float:
        """Area of the chip-dates predicted by this run, km^2 (chip cores x dates)."""
        return self.ok * self.chunk_km2

    @property
    def chips_per_s(self) -> float:
        """Chip-dates committed per second of run wall time."""
        return self.computed / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def stage1_chips_per_s(self) -> float:
        """Chip-dates committed per second of stage-1 wall time (the pipeline's throughput)."""
        return self.computed / self.stage1_s if self.stage1_s > 0 else 0.0

    @property
    def km2_per_h(self) -> float:
        """km^2 of chip-dates predicted per hour of run wall time."""
        return self.km2 / (self.wall_s / 3600) if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, km2=self.km2, chips_per_s=self.chips_per_s,
                 stage1_chips_per_s=self.stage1_chips_per_s, km2_per_h=self.km2_per_h)
        return d

    def text(self) -> str:
        """A printable multi-line summary."""
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        lines = [
            f"store      {self.store}  (run {self.run_id}, engine {self.engine})",
            (f"chips      {self.chips} chips x {self.n_times} date(s) = {self.chip_dates} chip-dates; "
             f"AOI {self.aoi_km2:.2f} km2"),
            (f"this run   {self.computed} chip-dates computed ({self.ok} predicted, "
             f"{sum(self.skipped.values())} skipped), {self.resumed} already done (resume), "
             f"{self.chunks_written} chunks written"),
            f"skipped    {why}",
            *[f"           {s}" for s in self.skip_examples],
            f"area       {self.km2:.2f} km2 predicted (chip cores x dates)",
            f"time       {self.wall_s:.1f} s wall (stage 1 {self.stage1_s:.1f} s, stage 2 {self.stage2_s:.1f} s)",
            (f"rate       {self.chips_per_s:.3f} chips/s overall, {self.stage1_chips_per_s:.3f} chips/s "
             f"in stage 1, {self.km2_per_h:.1f} km2/h"),
        ]
        lines += modality_lines(self.modalities)
        if self.quicklooks:
            lines.append(f"quicklooks {len(self.quicklooks)} PNG(s), e.g. {self.quicklooks[0]}")
        if self.crop_type is not None:
            ct = self.crop_type
            lines.append(f"crop_type  {ct.classified_px} px classified (season {ct.season_start}); "
                         f"areas {ct.area_csv}; map {ct.png}")
        lines += [f"WARNING    {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def modality_lines(modalities: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Summary lines: chips with each aux layer over all dates, and SAR per date (it changes by date)."""
    if not modalities:
        return []
    total = sum(m["chips"] for m in modalities.values())
    overall = ", ".join(f"{k} {sum(m[k] for m in modalities.values())}/{total}" for k in PRESENT_KEYS)
    per_date = ", ".join(f"{d} {m['sar']}/{m['chips']}" for d, m in sorted(modalities.items()))
    return [f"modalities {overall} chip-dates", f"           sar per date: {per_date}"]


def modality_warnings(modalities: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One warning per aux layer that some predicted chip-dates ran without (never silent)."""
    out = []
    total = sum(m["chips"] for m in modalities.values())
    for kind in PRESENT_KEYS:
        missing = {d: m["chips"] - m[kind] for d, m in sorted(modalities.items()) if m["chips"] > m[kind]}
        if missing:
            where = ", ".join(f"{d}: {n}" for d, n in list(missing.items())[:5]) + (", ..." if len(missing) > 5 else "")
            out.append(f"aux layer {kind} missing for {sum(missing.values())} of {total} predicted chip-dates "
                       f"({where}); those chips were predicted without it")
    return out


__all__ = ["MapSummary", "modality_lines", "modality_warnings"]
