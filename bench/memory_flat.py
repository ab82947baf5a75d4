"""Flat memory: driver and actor peak RSS of the whole mapping job over regions 1x, 4x and 16x.

    .venv/bin/python bench/memory_flat.py                  # n = 8: 8x8, 16x16, 32x32 chips, 1 date
    .venv/bin/python bench/memory_flat.py --n 4 --dates 2  # 4x4, 8x8, 16x16 chips, 2 dates
    .venv/bin/python bench/memory_flat.py --markdown       # the section of bench/results.json as Markdown

Regions: squares of ``n x n``, ``2n x 2n`` and ``4n x 4n`` chips (1x, 4x, 16x the area) centred in
one real Iowa MGRS tile (default 15TVG), written as lon/lat GeoJSON AOIs (:func:`region_aoi`; the
chip count is checked with ``plan_chips`` before anything runs). Pixels are synthetic, from
``bench/iowa_dry_run.py``'s generated catalog (real tile grid and item shape, VRT granules tiling
the bundled real Landsat granule; :func:`bench.iowa_dry_run.make_catalog`), 1 or 2 dates.

Each run is the job as a user runs it: ``jobs/map_region.py --aoi .. --catalog .. --engine bicubic
--classifier models/croptype-lgbm --yes`` in a child process (the Ray driver; a private local Ray),
so every stage runs: plan, stage 1 (read -> bicubic -> partials), stage 2 (blend -> store), finalize
(counts, quicklooks, the crop-type stage with the bundled Flanders classifier named explicitly,
which runs outside its region with a warning) and the store's overviews. A
:class:`bench.memory.TreeRssSampler` in this process samples the driver and every Ray process
under it; roles come from :data:`bench.memory.ROLES` (new Ray Data UDFs get a role of their own).

Flat: a role's peak at 4x and 16x is at most ``1 + FLAT_TOLERANCE`` times its peak at 1x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.iowa_dry_run import DATES, make_catalog
from bench.memory import TreeRssSampler
from lssr_ray.config import CROP_CLASSIFIER_DIR, GridConfig
from lssr_ray.errors import ConfigError, LssrError

TILE = "15TVG"
"""Iowa tile of the recorded real HLS item HLS.L30.T15TVG.2021180T165311.v2.0."""
FACTORS = (1, 2, 4)
"""Chips per side of each region as multiples of ``n``: areas 1x, 4x, 16x."""
FLAT_TOLERANCE = 0.10
EDGE_SLACK_M = 45.0
"""The AOI square is this much short of ``side`` chip cores, so that its lon/lat round trip
(curved edges back in UTM) cannot touch one more row or column of chips."""
OOM_MARK = "killed due to memory pressure"
"""What Ray's memory monitor logs (raylet) when it kills workers because the node is short of memory."""
WORKER_ROLES = ("read_actor", "lssr_actor", "commit_actor", "blend_actor")
"""Roles every run has (the other roles, e.g. new stages' UDFs, are listed as they appear)."""


def core_m() -> float:
    """Edge of one chip core on the ground (metres)."""
    g = GridConfig()
    return g.stride * g.input_resolution


def region_bounds(tile: str, side: int) -> tuple[str, tuple[float, float, float, float]]:
    """``(crs, UTM box)`` of a square of ``side`` x ``side`` chip cores centred in ``tile``."""
    from lssr_ray.data import hls
    from lssr_ray.data.mgrs import TILE_SIZE_M, tile_upper_left

    edge = side * core_m() - EDGE_SLACK_M
    if side < 1 or edge > TILE_SIZE_M - 4 * core_m():
        raise ConfigError(f"a square of {side} x {side} chips does not fit inside tile {tile} "
                          f"(at most {int((TILE_SIZE_M - 4 * core_m()) // core_m())} chips per side)")
    epsg = hls.tile_grid(tile)[0]
    tx, ty = tile_upper_left(tile)
    res = GridConfig().input_resolution
    x0 = tx + round((TILE_SIZE_M - edge) / 2 / res) * res  # on the tile's 30 m lattice
    y1 = ty - round((TILE_SIZE_M - edge) / 2 / res) * res
    return f"EPSG:{epsg}", (x0, y1 - edge, x0 + edge, y1)


def region_aoi(path: Path, tile: str, side: int) -> dict[str, Any]:
    """Write the lon/lat GeoJSON AOI of :func:`region_bounds`; its chips and 10 m grid, from
    ``plan_chips`` (the job's own planner); :class:`ConfigError` unless exactly ``side**2`` chips."""
    from lssr_ray.data.aoi import read_aoi, write_box_aoi
    from lssr_ray.data.grid import plan_chips

    crs, bounds = region_bounds(tile, side)
    write_box_aoi(path, bounds, crs)
    plan = plan_chips(read_aoi(path))
    if len(plan.chips) != side * side:
        raise ConfigError(f"AOI {path} plans {len(plan.chips)} chips, not {side} x {side}")
    h, w = plan.grid.output_shape
    return {"side": side, "chips": len(plan.chips), "aoi": str(path), "utm_crs": crs,
            "utm_bounds": [float(b) for b in bounds], "output_shape": [int(h), int(w)],
            "output_px_per_date": int(h * w), "aoi_km2": round(float(plan.aoi_area_km2), 2)}


def job_command(aoi: str, catalog: str, out: str, summary: str, *, classifier: str,
                actor_cpus: float) -> list[str]:
    """The mapping job's command line for one region (a private local Ray, no prompts)."""
    return [sys.executable, str(REPO / "jobs" / "map_region.py"), "--aoi", aoi, "--catalog", catalog,
            "--engine", "bicubic", "--out", out, "--classifier", classifier, "--yes", "--overwrite",
            "--actor-cpus", str(actor_cpus), "--no-progress", "--summary-json", summary]


def _pump(stream: Any, log: Any, t0: float, lines: list[tuple[float, str]]) -> None:
    """Copy the child's output to ``log``, each line stamped with seconds since the start."""
    for raw in iter(stream.readline, ""):
        t = round(time.perf_counter() - t0, 2)
        lines.append((t, raw.rstrip()))
        log.write(f"[{t:8.2f}] {raw}")
        log.flush()
    stream.close()


def peak_context(trace: list[tuple[float, float]], lines: list[tuple[float, str]]) -> dict[str, Any]:
    """When the driver peaked and the job's last log line before that (which phase)."""
    if not trace:
        return {}
    t, mb = max(trace, key=lambda s: s[1])
    before = [text for s, text in lines if s <= t and text.strip()]
    return {"t_s": t, "rss_mb": mb, "last_log_line": before[-1][:160] if before else ""}


PHASE_ENDS = (("start", "stage 1 actor pools:"), ("stage1", "stage 1: "), ("stage2", "stage 2: "))
"""Each phase of the job ends at the first log line starting with its marker (the job's own
``log.info`` lines); ``finalize`` (counts, quicklooks, crop type, overviews) runs from the last
marker to the end."""


def phase_peaks(trace: list[tuple[float, float]], lines: list[tuple[float, str]]) -> dict[str, float]:
    """The driver's peak RSS in each phase of :data:`PHASE_ENDS` (phases whose marker was not
    logged are left out, and so is every phase after them)."""
    out, start = {}, 0.0
    for phase, marker in (*PHASE_ENDS, ("finalize", None)):
        end = float("inf") if marker is None else next((t for t, text in lines if text.startswith(marker)), None)
        if end is None:
            break
        inside = [mb for t, mb in trace if start <= t <= end]
        if inside:
            out[phase] = max(inside)
        start = end
    return out


def run_region(region: dict[str, Any], catalog: Path, work: Path, *, classifier: str, actor_cpus: float,
               timeout: float) -> dict[str, Any]:
    """One job run under the RSS sampler -> its row (status, times, per-role peaks)."""
    name = f"side{region['side']}"
    out, summary = work / f"{name}.zarr", work / f"{name}.summary.json"
    summary.unlink(missing_ok=True)
    cmd = job_command(region["aoi"], str(catalog), str(out), str(summary), classifier=classifier,
                      actor_cpus=actor_cpus)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a private local Ray
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"  # each line reaches the pump (and its time stamp) when printed
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, t0, lines), daemon=True)
        pump.start()
        with TreeRssSampler(proc.pid, interval=0.25) as sampler:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            except BaseException:  # interrupted: the job's own clean-up stops its local Ray
                proc.terminate()
                proc.wait(timeout=60)
                raise
        pump.join(timeout=10)
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {**{k: region[k] for k in ("side", "chips", "output_px_per_date", "aoi_km2")},
                           "process_wall_s": round(wall, 1), "exit_code": rc, "rss_samples": sampler.samples}
    mem = sampler.by_role()
    row["peak_rss_mb"] = {role: max(v) for role, v in mem.items()}
    row["peak_private_mb"] = {role: max(v) for role, v in sampler.by_role("peak_private_mb").items()}
    row["processes"] = {role: len(v) for role, v in mem.items()}
    row["driver_peak"] = peak_context(sampler.root_trace, lines)
    row["driver_peak_by_phase"] = phase_peaks(sampler.root_trace, lines)
    # Ray's memory monitor kills workers when the *machine* runs short (other users' processes
    # count too): such a run's peaks and times are not comparable, so it is flagged
    row["oom_kill_lines"] = sum(OOM_MARK in text for _, text in lines)
    if rc != 0 or not summary.is_file():
        tail = [text for _, text in lines if text.strip()][-3:]
        row["status"] = f"failed (exit {rc}): {' | '.join(tail)[-400:]}"
        return row
    s = json.loads(summary.read_text())
    crop = s.get("crop_type") or {}
    row.update(status="measured", chip_dates=s["chip_dates"], ok=s["computed"] - sum(s["skipped"].values()),
               skipped=s["skipped"], wall_s=round(s["wall_s"], 1), stage1_s=round(s["stage1_s"], 1),
               stage2_s=round(s["stage2_s"], 1), chunks_written=s["chunks_written"],
               crop_type_px=crop.get("classified_px"), quicklooks=len(s.get("quicklooks") or []))
    return row


def ratios(runs: list[dict[str, Any]], *, tolerance: float = FLAT_TOLERANCE, key: str = "peak_rss_mb") -> dict[str, Any]:
    """Per role, each larger region's peak (``key``: ``peak_rss_mb`` or ``peak_private_mb``) over
    the 1x peak, and whether all stay within ``1 + tolerance`` (``flat``); roles missing from the
    1x run or a larger run are listed, not rated."""
    measured = [{**r, "peak_rss_mb": r.get(key, {})} for r in runs if r.get("status") == "measured"]
    if len(measured) < 2:
        return {"by_role": {}, "flat": None, "not_flat": [], "unrated": []}
    base, rest = measured[0], measured[1:]
    out: dict[str, dict[str, float]] = {}
    unrated = []
    roles = sorted({k for r in measured for k in r["peak_rss_mb"]})
    for role in roles:
        if role not in base["peak_rss_mb"] or any(role not in r["peak_rss_mb"] for r in rest):
            unrated.append(role)
            continue
        b = base["peak_rss_mb"][role]
        out[role] = {f"{r['chips'] // base['chips']}x": round(r["peak_rss_mb"][role] / b, 3) for r in rest}
    judged = [role for role in out if role == "driver" or role.endswith(("_actor", "_task"))]
    not_flat = [role for role in judged if max(out[role].values()) > 1 + tolerance]
    return {"by_role": out, "judged": judged, "flat": not not_flat, "not_flat": not_flat, "unrated": unrated,
            "tolerance": tolerance}


def memory_flat(work: Path, *, n: int = 8, dates: int = 1, tile: str = TILE, classifier: str | None = None,
                actor_cpus: float = 0.5, timeout: float = 3600, retries: int = 1, log: Any = print) -> dict[str, Any]:
    """The whole benchmark; returns the ``memory_flat`` results section. A failed run is rerun up
    to ``retries`` times (on a loaded host Ray's own start can time out: no measurement)."""
    classifier = classifier or str(CROP_CLASSIFIER_DIR)
    work.mkdir(parents=True, exist_ok=True)
    regions = [region_aoi(work / f"side{f * n}.geojson", tile, f * n) for f in FACTORS]
    catalog = make_catalog(work / "catalog", [tile], dates=dates)
    runs = []
    for region in regions:
        failures: list[str] = []
        for _ in range(1 + max(0, retries)):
            run = run_region(region, catalog, work, classifier=classifier, actor_cpus=actor_cpus, timeout=timeout)
            log(row_text(run))
            if run["status"] == "measured":
                break
            failures.append(run["status"])
        run["failed_attempts"] = failures
        runs.append(run)
    return {"tile": tile, "n": n, "dates": dates, "dates_utc": list(DATES[:dates]), "engine": "bicubic",
            "classifier": os.path.relpath(classifier, REPO) if Path(classifier).is_relative_to(REPO) else classifier,
            "actor_cpus": actor_cpus, "regions": regions, "runs": runs, "ratios": ratios(runs),
            "ratios_private": ratios(runs, key="peak_private_mb"),
            "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "note": "peak RSS per process (MiB; shared pages counted in each), max over the processes of a role; "
                    "peak_private_mb: RSS minus shared pages (the object store's /dev/shm pages a worker "
                    "touched and shared libraries are not its own)"}


def _roles(runs: list[dict[str, Any]]) -> list[str]:
    seen = {k for r in runs for k in r.get("peak_rss_mb", {})}
    extra = sorted(seen - {"driver", *WORKER_ROLES, "ray_system", "ray_worker_other", "other"})
    return ["driver", *[r for r in WORKER_ROLES if r in seen], *extra,
            *[r for r in ("ray_system", "ray_worker_other") if r in seen]]


def row_text(r: dict[str, Any]) -> str:
    head = f"{r['chips']:>6,} chips {r['output_px_per_date']:>12,} px  "
    if r.get("status") != "measured":
        return head + r.get("status", "?")
    mem = "  ".join(f"{k.removesuffix('_actor')} {v:.0f}" for k, v in r["peak_rss_mb"].items() if k != "other")
    oom = f"  ({r['oom_kill_lines']} OOM-kill log lines: not comparable)" if r.get("oom_kill_lines") else ""
    return head + f"{r['process_wall_s']:>7.1f} s  MiB: {mem}{oom}"


def table(sec: dict[str, Any]) -> str:
    """A plain-text table: one column per region, one row per role, then the ratios."""
    runs = sec["runs"]
    lines = [(f"memory flat: tile {sec['tile']}, n = {sec['n']}, {sec['dates']} date(s), engine bicubic, "
              f"classifier {sec['classifier']}"),
             f"{'':<26}" + "".join(f"{r['chips']:>12,}" for r in runs),
             f"{'output px per date':<26}" + "".join(f"{r['output_px_per_date']:>12,}" for r in runs),
             f"{'status':<26}" + "".join(f"{r['status'][:11]:>12}" for r in runs),
             f"{'wall s (process)':<26}" + "".join(f"{r['process_wall_s']:>12.1f}" for r in runs)]
    for role in _roles(runs):
        cells = "".join(f"{r['peak_rss_mb'][role]:>12.0f}" if role in r.get("peak_rss_mb", {}) else f"{'-':>12}"
                        for r in runs)
        rat = sec["ratios"]["by_role"].get(role, {})
        lines.append(f"{'peak MiB ' + role:<26}{cells}   " + "  ".join(f"{k} {v:.2f}" for k, v in rat.items()))
    rt = sec["ratios"]
    verdict = "n/a" if rt["flat"] is None else ("flat" if rt["flat"] else "NOT flat: " + ", ".join(rt["not_flat"]))
    lines.append(f"within {FLAT_TOLERANCE:.0%} of 1x (driver and workers, RSS): {verdict}")
    priv = sec.get("ratios_private")
    if priv and priv["flat"] is not None:
        lines.append(f"within {FLAT_TOLERANCE:.0%} of 1x (RSS minus shared pages): "
                     + ("flat" if priv["flat"] else "NOT flat: " + ", ".join(priv["not_flat"]))
                     + "; " + "; ".join(f"{role} " + " ".join(f"{k} {v:.2f}" for k, v in rat.items())
                                        for role, rat in priv["by_role"].items() if role in priv["judged"]))
    for r in runs:
        if r.get("driver_peak"):
            p = r["driver_peak"]
            phases = ", ".join(f"{k} {v:.0f}" for k, v in r.get("driver_peak_by_phase", {}).items())
            lines.append(f"  {r['chips']:,} chips: driver peak {p['rss_mb']:.0f} MiB at {p['t_s']:.0f} s, "
                         f"after: {p['last_log_line'][:100]}" + (f"; by phase MiB: {phases}" if phases else ""))
    return "\n".join(lines)


def markdown(sec: dict[str, Any]) -> str:
    """The section as a Markdown table (for bench/RESULTS.md)."""
    runs = sec["runs"]
    sizes = [f"{f}x: {r['chips']:,} chips" for f, r in zip(("1", "4", "16"), runs, strict=False)]
    out = ["| | " + " | ".join(sizes) + " | 4x / 1x | 16x / 1x |", "|---|" + "---|" * (len(runs) + 2),
           "| output px per date | " + " | ".join(f"{r['output_px_per_date']:,}" for r in runs) + " | | |",
           "| wall s (whole job) | " + " | ".join(f"{r['process_wall_s']:.0f}" for r in runs) + " | | |"]
    for phase, _ in (*PHASE_ENDS, ("finalize", None)):
        if any(phase in r.get("driver_peak_by_phase", {}) for r in runs):
            vals = [r.get("driver_peak_by_phase", {}).get(phase) for r in runs]
            rat = [f"{v / vals[0]:.2f}" if v and vals[0] else "" for v in vals[1:3]]
            out.append(f"| driver peak MiB in {phase} | " + " | ".join(f"{v:.0f}" if v else "-" for v in vals)
                       + f" | {' | '.join(rat + [''] * (2 - len(rat)))} |")
    for role in _roles(runs):
        rat = sec["ratios"]["by_role"].get(role, {})
        cells = " | ".join(f"{r['peak_rss_mb'][role]:.0f}" if role in r.get("peak_rss_mb", {}) else "-" for r in runs)
        bold = role in sec["ratios"].get("not_flat", [])
        rs = " | ".join((f"**{rat[k]:.2f}**" if bold else f"{rat[k]:.2f}") if k in rat else "" for k in ("4x", "16x"))
        out.append(f"| peak RSS MiB {role} | {cells} | {rs} |")
    priv = sec.get("ratios_private")
    for role in _roles(runs) if priv else []:
        rat = priv["by_role"].get(role, {})
        if not rat:
            continue
        cells = " | ".join(f"{r['peak_private_mb'][role]:.0f}" if role in r.get("peak_private_mb", {}) else "-"
                          for r in runs)
        bold = role in priv.get("not_flat", [])
        rs = " | ".join((f"**{rat[k]:.2f}**" if bold else f"{rat[k]:.2f}") if k in rat else "" for k in ("4x", "16x"))
        out.append(f"| peak private MiB {role} | {cells} | {rs} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="chips per side of the 1x region (4x: 2n, 16x: 4n)")
    ap.add_argument("--dates", type=int, default=1, help=f"dates per tile (1..{len(DATES)})")
    ap.add_argument("--tile", default=TILE, help="MGRS tile the regions are centred in")
    ap.add_argument("--classifier", help="crop-type classifier folder (default the bundled one)")
    ap.add_argument("--actor-cpus", type=float, default=0.5, help="CPUs per LSSR actor (0.5 fits 2 cores)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--retries", type=int, default=1, help="reruns of a failed run (e.g. Ray start timed out)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lssr-memory-flat"), help="AOIs, catalog, stores, logs")
    ap.add_argument("--results", type=Path, default=HERE / "results.json", help="merge the section into this JSON")
    ap.add_argument("--markdown", action="store_true", help="print the section of --results as Markdown and exit")
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown(json.loads(a.results.read_text())["memory_flat"]))
        return 0
    try:
        t = time.perf_counter()
        sec = memory_flat(a.work, n=a.n, dates=a.dates, tile=a.tile, classifier=a.classifier,
                          actor_cpus=a.actor_cpus, timeout=a.timeout, retries=a.retries)
        sec["command"] = "bench/memory_flat.py " + " ".join(argv if argv is not None else sys.argv[1:])
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(sec))
    res = json.loads(a.results.read_text()) if a.results.is_file() else {}
    res["memory_flat"] = sec
    res.setdefault("runs", {})["memory_flat"] = {"date_utc": sec["date_utc"], "seconds": round(time.perf_counter() - t, 1),
                                                 "quick": False, "loadavg_1_5_15": sec["loadavg_1_5_15"]}
    a.results.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote section memory_flat of {a.results}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit stops the running job too (run_region)
    raise SystemExit(main())
