"""Planner: expected wall time and device-hours to map a region on N devices (GPUs or CPU nodes).

Model (one date; multiply chips by the number of dates)::

    chips       = ceil(area_km2 * edge_factor / core_km**2) * dates
    wall_s      = startup_s + chips * (max(s_per_chip / efficiency, host_s_per_chip)
                                       + post_s_per_chip) / n_devices
    device_h    = n_devices * wall_s / 3600

- ``core_km``: ground edge of a chip core = one output chunk: (64 - 8) px x 30 m = 1.68 km.
- ``edge_factor``: chips touching the AOI / (area / core area); 1.0106 for the Iowa outline
  (52,537 chips from ``lssr_ray.data.grid.plan_chips``).
- ``s_per_chip``: device-seconds per chip of the engine alone (``bench/engines.py``) or, for
  GPUs without a measurement, ``flops_per_chip / (peak_flops * utilisation)``: an *estimate*.
- ``efficiency``: pipeline throughput / engine-only throughput (``bench/pipeline.py``).
- ``host_s_per_chip``: stage-1 CPU work per chip on one node (read + commit), which bounds a
  GPU node whose model is faster than its host (0 for CPU scenarios: already in ``efficiency``).
- ``post_s_per_chip``: stage 2 (blend + write) seconds per chip on one node.
- ``startup_s``: fixed cost (planning, Ray start, actor start-up, model load).

Every :class:`Rates` says where its numbers come from and whether they were measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lssr_ray.errors import ConfigError

CORE_KM = 1.68
"""Chip core edge in km ((chip_size 64 - overlap 8) x 30 m)."""
IOWA_KM2 = 146_718.7
"""Area of ``examples/iowa.geojson`` (``lssr_ray.data.aoi.read_aoi(...).area_km2``)."""
IOWA_EDGE_FACTOR = 52_537 / (IOWA_KM2 / CORE_KM**2)
"""Chips of ``plan_chips`` for the Iowa outline / (area / core area)."""
H100_PEAK_TFLOPS = 989.4
"""NVIDIA H100 SXM dense FP16/BF16 tensor-core peak (datasheet; 1,979 is with sparsity)."""
GPU_UTILISATION = 0.30
"""Assumed achieved fraction of peak for the fp16 TensorRT VAE + UNet at 192 x 192, batch >= 8
(an assumption, not a measurement: no GPU was available to this benchmark)."""
GPU_HOST_CORES = 16
"""CPU cores of one GPU host (blend + write of stage 2 run there)."""
GPU_EFFICIENCY = 0.90
"""Assumed pipeline / engine ratio on a GPU node (the project's target), an assumption."""


@dataclass(frozen=True)
class Rates:
    """Per-device throughput numbers of one hardware/model scenario."""

    label: str
    """What device and model these numbers describe."""
    s_per_chip: float
    """Device-seconds per 192 x 192 chip, engine alone."""
    efficiency: float = 1.0
    """Pipeline throughput / engine-only throughput, in (0, 1]."""
    post_s_per_chip: float = 0.0
    """Stage-2 (blend + write) seconds per chip on one node."""
    host_s_per_chip: float = 0.0
    """Stage-1 host (CPU) seconds per chip on one node: read + commit; a lower bound on the
    stage-1 time per chip when the device is faster than its host."""
    startup_s: float = 0.0
    """Fixed seconds per run."""
    measured: bool = False
    """True only if ``s_per_chip`` and ``efficiency`` were measured on this kind of device."""
    source: str = ""
    """Where the numbers come from."""

    def __post_init__(self) -> None:
        if not self.s_per_chip > 0:
            raise ConfigError(f"Rates.s_per_chip must be > 0 seconds, got {self.s_per_chip}")
        if not 0 < self.efficiency <= 1:
            raise ConfigError(f"Rates.efficiency must be in (0, 1], got {self.efficiency}")
        if self.post_s_per_chip < 0 or self.startup_s < 0 or self.host_s_per_chip < 0:
            raise ConfigError(f"post_s_per_chip, host_s_per_chip and startup_s must be >= 0, got "
                              f"{self.post_s_per_chip}, {self.host_s_per_chip}, {self.startup_s}")


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one region, scenario and device count."""

    label: str
    n_devices: int
    chips: int
    """Chip-dates to compute."""
    wall_s: float
    """Expected wall time in seconds."""
    device_hours: float
    """n_devices x wall time, in hours (GPU-hours for GPU scenarios)."""
    km2_per_h: float
    """Area (x dates) per wall hour."""
    measured: bool
    """Whether the scenario's per-chip numbers were measured (else estimated)."""


def chips_for_area(area_km2: float, *, core_km: float = CORE_KM, edge_factor: float = 1.0, dates: int = 1) -> int:
    """Chip-dates for a region: ``ceil(area * edge_factor / core_km**2) * dates``."""
    if not area_km2 > 0:
        raise ConfigError(f"area_km2 must be > 0, got {area_km2}")
    if not core_km > 0 or edge_factor < 1 or dates < 1:
        raise ConfigError(f"need core_km > 0, edge_factor >= 1 and dates >= 1; got {core_km}, {edge_factor}, {dates}")
    return math.ceil(area_km2 * edge_factor / core_km**2 - 1e-9) * int(dates)


def gpu_seconds_per_chip(flops_per_chip: float, *, peak_tflops: float = H100_PEAK_TFLOPS,
                         utilisation: float = GPU_UTILISATION) -> float:
    """Estimated device-seconds per chip: ``flops / (peak_tflops * 1e12 * utilisation)``."""
    if not flops_per_chip > 0 or not peak_tflops > 0 or not 0 < utilisation <= 1:
        raise ConfigError(f"need flops_per_chip > 0, peak_tflops > 0, 0 < utilisation <= 1; "
                          f"got {flops_per_chip}, {peak_tflops}, {utilisation}")
    return flops_per_chip / (peak_tflops * 1e12 * utilisation)


def plan_region(area_km2: float, n_devices: int, rates: Rates, *, dates: int = 1, edge_factor: float = 1.0,
                core_km: float = CORE_KM) -> Plan:
    """Wall time and device-hours for ``area_km2`` on ``n_devices`` (see the module docstring)."""
    if int(n_devices) != n_devices or n_devices < 1:
        raise ConfigError(f"n_devices must be a whole number >= 1, got {n_devices}")
    chips = chips_for_area(area_km2, core_km=core_km, edge_factor=edge_factor, dates=dates)
    per_chip = max(rates.s_per_chip / rates.efficiency, rates.host_s_per_chip) + rates.post_s_per_chip
    wall = rates.startup_s + chips * per_chip / n_devices
    return Plan(label=rates.label, n_devices=int(n_devices), chips=chips, wall_s=wall,
                device_hours=n_devices * wall / 3600, km2_per_h=area_km2 * dates / (wall / 3600),
                measured=rates.measured)


def _measured_pipeline(results: dict[str, Any]) -> dict[str, Any] | None:
    runs = [r for r in results.get("pipeline", {}).get("runs", [])
            if r.get("status") == "measured" and not r.get("crop_type_stage")]
    if not runs:
        return None
    one = [r for r in runs if r["actors"] == 1]
    return max(one or runs, key=lambda r: r["chips"])


def rates_from_results(results: dict[str, Any], *, utilisation: float = GPU_UTILISATION,
                       peak_tflops: float = H100_PEAK_TFLOPS) -> list[Rates]:
    """Scenarios derived from a ``bench/results.json`` dict (those its numbers allow)."""
    out: list[Rates] = []
    eng = results.get("engines", {})
    host = results.get("machine", {}).get("cpu_model", "this CPU")
    cores = results.get("machine", {}).get("cores", "?")
    run = _measured_pipeline(results)
    eff, post, start, host_cpu = 1.0, 0.0, 0.0, 0.0
    if run is not None:
        pcs = run.get("per_chip_s") or {}
        host_cpu = float(pcs.get("read_s") or 0.0) + float(pcs.get("commit_s") or 0.0)
        eff = min(1.0, run["ratio_to_engine_only_all_cores"])
        post = run["stage2_s"] / max(1, run["chip_dates_ok"])
        start = max(0.0, run["run_wall_s"] - run["stage1_s"] - run["stage2_s"])
        rows = results["pipeline"]["engine_only"]
        node = next((e for e in rows if e["threads"] == cores), max(rows, key=lambda e: e["threads"]))
        # s_per_chip / efficiency = 1 / (measured pipeline chips/s) whenever the ratio is <= 1
        out.append(Rates(label=f"CPU node ({cores} cores, {host}), small stand-in base, onnxruntime",
                         s_per_chip=1 / node["chips_per_s"], efficiency=eff, post_s_per_chip=post, startup_s=start,
                         measured=True, source="bench/pipeline.py: engine_throughput with all cores, stage-1 "
                                                "ratio, stage-2 time, start-up of the largest 1-actor run"))
    sd21 = [r for r in eng.get("rows", []) if r["model"] == "sd21" and r["status"] == "measured"]
    if sd21:
        out.append(Rates(label=f"CPU node ({cores} cores), SD-2.1-size model, torch eager",
                         s_per_chip=sd21[0]["s_per_chip"], efficiency=eff, post_s_per_chip=post, startup_s=start,
                         measured=True, source="bench/engines.py: SD-2.1 architecture, random weights, batch 1; "
                                                "pipeline ratio of the small base"))
    fl = eng.get("flops_per_chip", {}).get("sd21", {}).get("total")
    spread = cores / GPU_HOST_CORES if isinstance(cores, int) else 1.0
    if fl:
        out.append(Rates(label=f"H100 (ESTIMATE: {fl / 1e12:.2f} TFLOP/chip at {utilisation:.0%} of "
                               f"{peak_tflops:g} TFLOP/s), SD-2.1-size model, TensorRT fp16",
                         s_per_chip=gpu_seconds_per_chip(fl, peak_tflops=peak_tflops, utilisation=utilisation),
                         efficiency=GPU_EFFICIENCY, post_s_per_chip=post * spread, host_s_per_chip=host_cpu * spread,
                         startup_s=start, measured=False,
                         source="FLOPs counted by bench/engines.py; utilisation and efficiency assumed; "
                                "host read + commit and stage 2 = the measured CPU seconds per chip spread "
                                f"over {GPU_HOST_CORES} host cores"))
    return out


def planner_section(results: dict[str, Any], *, area_km2: float = IOWA_KM2, edge_factor: float = IOWA_EDGE_FACTOR,
                    devices: tuple[int, ...] = (1, 8, 64), dates: int = 1) -> dict[str, Any]:
    """The ``planner`` section: every scenario x device count for one region (default Iowa)."""
    plans = [asdict(plan_region(area_km2, n, r, dates=dates, edge_factor=edge_factor))
             for r in rates_from_results(results) for n in devices]
    return {"area_km2": area_km2, "edge_factor": edge_factor, "dates": dates,
            "chips": chips_for_area(area_km2, edge_factor=edge_factor, dates=dates),
            "scenarios": [asdict(r) for r in rates_from_results(results)], "plans": plans}


def _hms(s: float) -> str:
    if s >= 86400 * 2:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min"


def planner_table(section: dict[str, Any]) -> str:
    lines = [f"region {section['area_km2']:,.0f} km2 x {section['dates']} date(s) = {section['chips']:,} chips",
             f"{'scenario':<80} {'N':>4} {'wall':>9} {'device-h':>10} {'km2/h':>10}  kind"]
    for p in section["plans"]:
        lines.append(f"{p['label'][:80]:<80} {p['n_devices']:>4} {_hms(p['wall_s']):>9} {p['device_hours']:>10,.1f} "
                     f"{p['km2_per_h']:>10,.0f}  {'measured' if p['measured'] else 'ESTIMATE'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area-km2", type=float, help="region area (default: Iowa, 146,719 km2)")
    ap.add_argument("--aoi", help="AOI GeoJSON: area and edge factor from its chip plan")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 8, 64], help="device counts (GPUs or CPU nodes)")
    ap.add_argument("--dates", type=int, default=1)
    ap.add_argument("--results", default=str(HERE / "results.json"))
    a = ap.parse_args(argv)
    try:
        results = json.loads(Path(a.results).read_text())
        area, edge = (a.area_km2 or IOWA_KM2), (1.0 if a.area_km2 else IOWA_EDGE_FACTOR)
        if a.aoi:
            from lssr_ray.data.aoi import read_aoi
            from lssr_ray.data.grid import plan_chips

            aoi = read_aoi(a.aoi)
            area = aoi.area_km2
            edge = max(1.0, len(plan_chips(aoi)) / (area / CORE_KM**2))
        print(planner_table(planner_section(results, area_km2=area, edge_factor=edge,
                                            devices=tuple(a.devices), dates=a.dates)))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CORE_KM", "Plan", "Rates", "chips_for_area", "gpu_seconds_per_chip", "plan_region",
           "planner_section", "planner_table", "rates_from_results"]
