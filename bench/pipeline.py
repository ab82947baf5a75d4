"""Pipeline benchmark: the Ray Data mapping job vs its engine alone, and its memory.

Regions are UTM squares inside the Alabama Landsat-8 scene of the bundled archive (one L30
granule, 2015-08-04, EPSG:32616), written as lon/lat GeoJSON: ``small`` = 3 x 3 chips,
``large`` = 6 x 6 chips (4x the area). Each run is ``lssr_ray.mapping.pipeline.run_map``
(engine ``auto`` -> onnxruntime on CPU, batch 4, no quicklooks) in a *child process*, which
is then the Ray driver; a :class:`bench.memory.TreeRssSampler` in this process samples the
RSS of the driver and of every Ray process under it.

Throughput = chip-dates committed / stage-1 wall time (read -> LSSR -> commit, streamed;
actor start-up and model load included), ``MapSummary.stage1_chips_per_s``. km2/h counts
chip cores (1.68 km x 1.68 km each). Engine-only throughput is
``lssr_ray.mapping.pipeline.engine_throughput`` on chips of the same region (preprocess ->
engine -> postprocess in-process, no Ray), once with all cores and once with the threads one
actor gets (``OMP_NUM_THREADS`` = its CPUs, as Ray sets it).

On a 2-core host: 1 actor reserves 1 CPU (the job default), 2 actors reserve 0.5 CPU each
(two 1-CPU actors plus the 0.5-CPU reader would not fit and the job would wait forever).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

ORIGIN = (456015.0, 3396015.0)
"""SW corner (EPSG:32616 m) of the bench regions, inside the Alabama L30 crop."""
CORE_M = 1680.0
"""Chip core edge on the ground: (64 - 8) input px x 30 m."""
FIRST_M = 2970.0
"""Edge of a 2 x 2-chip box at ORIGIN (as in tests/mapping/test_pipeline.py)."""
REGIONS: dict[str, int] = {"small": 3, "large": 6}
"""Region name -> chips per side."""


def region_box(chips_per_side: int) -> tuple[float, float, float, float]:
    """UTM box (EPSG:32616 m) covering ``chips_per_side`` x ``chips_per_side`` chip cores."""
    edge = FIRST_M + (chips_per_side - 2) * CORE_M
    return (ORIGIN[0], ORIGIN[1], ORIGIN[0] + edge, ORIGIN[1] + edge)


def write_aoi(path: Path, bounds: tuple[float, float, float, float], crs: str = "EPSG:32616") -> str:
    """A lon/lat GeoJSON Feature of a UTM box."""
    from lssr_ray.data.aoi import write_box_aoi

    return write_box_aoi(path, bounds, crs)


def _child(a: argparse.Namespace) -> int:
    """The driver process of one run: run_map, then write the summary as JSON."""
    import ray

    from lssr_ray.config import CROP_CLASSIFIER_DIR, MapConfig
    from lssr_ray.mapping.pipeline import run_map

    extra = {}
    if "classifier" in {f.name for f in dataclasses.fields(MapConfig)}:  # the crop-type stage 3
        # "default": the bundled model named explicitly (its scope is Flanders; explicit use over the
        # benchmark regions is recorded as a warning instead of refused)
        extra["classifier"] = str(CROP_CLASSIFIER_DIR) if a.classifier == "default" else a.classifier
    cfg = MapConfig(aoi=a.aoi, out=a.out, engine="auto", num_actors=a.actors, actor_cpus=a.actor_cpus,
                    batch_size=a.batch_size, quicklook=False, overwrite=True, **extra)
    recs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        summary = run_map(cfg, progress=False, on_commit=recs.append)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    d = summary.to_dict()
    d["child_wall_s"] = time.perf_counter() - t0
    ok = [r for r in recs if r.get("status") == "ok"]
    # per-chip seconds inside the UDFs (read and infer are per-call times shared out per chip)
    d["per_chip_s"] = {k: sum(float(r[k]) for r in ok) / len(ok) if ok else None
                       for k in ("read_s", "infer_s", "commit_s")}
    Path(a.json).write_text(json.dumps(d, default=str))
    return 0


def run_one(aoi: str, *, actors: int, actor_cpus: float, batch_size: int, tmp: Path, name: str,
            classifier: str = "none", timeout: float = 600) -> dict[str, Any]:
    """One mapping run in a child process under the RSS sampler -> summary + memory.

    ``classifier``: ``"none"`` skips the crop-type stage 3 (super-resolution only), ``"default"``
    runs it with the job's default classifier (in the driver, after stage 2)."""
    from bench.memory import TreeRssSampler

    out_json = tmp / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--aoi", aoi, "--out", str(tmp / f"{name}.zarr"),
           "--actors", str(actors), "--actor-cpus", str(actor_cpus), "--batch-size", str(batch_size),
           "--classifier", classifier, "--json", str(out_json)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a private local Ray
    t0 = time.perf_counter()
    with open(tmp / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeRssSampler(proc.pid, interval=0.25) as sampler:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -9
    wall = time.perf_counter() - t0
    if rc != 0 or not out_json.is_file():
        tail = (tmp / f"{name}.log").read_text()[-1500:]
        return {"status": f"failed (exit {rc}): {tail.strip().splitlines()[-1] if tail.strip() else ''}",
                "log_tail": tail}
    s = json.loads(out_json.read_text())
    mem = sampler.by_role()
    km2_h_stage1 = s["km2"] / (s["stage1_s"] / 3600) if s["stage1_s"] > 0 else 0.0
    return {
        "status": "measured",
        "crop_type_stage": classifier != "none",
        "actors": actors,
        "actor_cpus": actor_cpus,
        "batch_size": batch_size,
        "engine": s["engine"],
        "chips": s["chips"],
        "chip_dates_ok": s["ok"],
        "aoi_km2": s["aoi_km2"],
        "km2_predicted": s["km2"],
        "stage1_s": s["stage1_s"],
        "stage2_s": s["stage2_s"],
        "run_wall_s": s["wall_s"],
        "process_wall_s": wall,
        "chips_per_s": s["stage1_chips_per_s"],
        "km2_per_h": km2_h_stage1,
        "km2_per_h_whole_run": s["km2_per_h"],
        "memory_mb": {
            "driver": (mem.get("driver") or [None])[0],
            "lssr_actors": mem.get("lssr_actor", []),
            "read_actors": mem.get("read_actor", []),
            "commit_actors": mem.get("commit_actor", []),
            "blend_actors": mem.get("blend_actor", []),
            "ray_system": mem.get("ray_system", []),
            "other_ray_workers": mem.get("ray_worker_other", []),
        },
        "per_chip_s": s.get("per_chip_s"),
        "rss_samples": sampler.samples,
    }


def engine_only(aoi: str, *, threads: int, batch_size: int, n_chips: int, repeats: int) -> dict[str, Any]:
    """``engine_throughput`` with ``threads`` onnxruntime threads on chips of ``aoi``."""
    import warnings

    from lssr_ray.config import MapConfig
    from lssr_ray.mapping.stage_infer import engine_throughput

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # OrtEngine's default thread count reads it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = engine_throughput(MapConfig(aoi=aoi, engine="auto", batch_size=batch_size),
                                  n_chips=n_chips, repeats=repeats)
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    r["threads"] = threads
    return r


def add_ratios(runs: list[dict[str, Any]], engine_rows: list[dict[str, Any]], *, cores: int) -> None:
    """Set ``ratio_to_engine_only_all_cores`` (engine with ``cores`` threads) and
    ``ratio_to_engine_only_1_thread`` on every measured run (in place)."""
    by_threads = {e["threads"]: e["chips_per_s"] for e in engine_rows}
    for r in runs:
        if r["status"] != "measured":
            continue
        if cores in by_threads:
            r["ratio_to_engine_only_all_cores"] = r["chips_per_s"] / by_threads[cores]
        if 1 in by_threads:
            r["ratio_to_engine_only_1_thread"] = r["chips_per_s"] / by_threads[1]


def run_pipeline(*, quick: bool = False, batch_size: int = 4, log: Any = print) -> dict[str, Any]:
    """The ``pipeline`` section of ``bench/results.json``.

    Full: small (1 actor), large (1 actor), large (2 actors) + engine-only on the large region,
    all without the crop-type stage; then small and large (1 actor) with it (driver memory).
    Quick: small with 1 actor, and engine-only on 4 chips with all cores.
    """
    from bench.engines import cpu_threads

    cores = cpu_threads()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lssr-bench-map-") as d:
        tmp = Path(d)
        aois = {name: write_aoi(tmp / f"{name}.geojson", region_box(n)) for name, n in REGIONS.items()}
        ref_region = "small" if quick else "large"
        eng = []
        for threads in [cores] if quick else sorted({cores, 1}, reverse=True):
            r = engine_only(aois[ref_region], threads=threads, batch_size=batch_size,
                            n_chips=4 if quick else 8, repeats=1 if quick else 2)
            r["region"] = ref_region
            eng.append(r)
            log(f"  engine only ({r['engine']}, {threads} thread(s)): {r['chips_per_s']:.2f} chips/s")
        plan = [("small", 1, "none")] if quick else [
            ("small", 1, "none"), ("large", 1, "none"), ("large", 2, "none"),
            ("small", 1, "default"), ("large", 1, "default")]
        for region, actors, clf in plan:
            actor_cpus = 1.0 if actors == 1 else round(1.0 / actors, 3)
            r = run_one(aois[region], actors=actors, actor_cpus=actor_cpus, batch_size=batch_size, tmp=tmp,
                        name=f"{region}_{actors}a_{clf}", classifier=clf)
            r.update(region=region, region_box_utm=list(region_box(REGIONS[region])))
            runs.append(r)
            if r["status"] == "measured":
                log(f"  pipeline {region} ({r['chips']} chips) {actors} actor(s){' + crop type' if clf != 'none' else ''}: "
                    f"{r['chips_per_s']:.2f} chips/s, "
                    f"driver {r['memory_mb']['driver']} MiB, actors {r['memory_mb']['lssr_actors']} MiB")
            else:
                log(f"  pipeline {region} {actors} actor(s): {r['status']}")
    add_ratios(runs, eng, cores=cores)
    return {
        "regions": {k: {"chips_per_side": n, "utm_box_epsg32616": list(region_box(n))} for k, n in REGIONS.items()},
        "scene": "bundled archive, HLS.L30.T16RDV.2015216 (Alabama Landsat-8 scene in HLS v2.0 format), 1 date",
        "engine_only": eng,
        "runs": runs,
        "cores": cores,
        "note": "throughput = chip-dates / stage-1 wall time (actor start-up and model load included); "
                "RSS per process (shared library pages counted in each)",
    }


def pipeline_table(section: dict[str, Any]) -> str:
    head = f"{'run':<22} {'chips':>5} {'chips/s':>8} {'km2/h':>8} {'/engine':>8} {'driver MiB':>10}  LSSR actor MiB"
    lines = [head + "  (/engine: vs engine-only with all cores)"]
    for e in section["engine_only"]:
        lines.append(f"{'engine only, ' + str(e['threads']) + ' thr':<22} {e['chips']:>5} {e['chips_per_s']:8.2f} "
                     f"{e['chips_per_s'] * 2.8224 * 3600:8.0f} {'':>8}")
    for r in section["runs"]:
        name = f"{r['region']}, {r.get('actors', '?')} actor(s){' +crop' if r.get('crop_type_stage') else ''}"
        if r["status"] != "measured":
            lines.append(f"{name:<22} {r['status']}")
            continue
        m = r["memory_mb"]
        lines.append(f"{name:<22} {r['chips']:>5} {r['chips_per_s']:8.2f} {r['km2_per_h']:8.0f} "
                     f"{r['ratio_to_engine_only_all_cores']:8.2f} {m['driver']:>10}  {m['lssr_actors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--aoi")
    ap.add_argument("--out")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--actor-cpus", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json")
    ap.add_argument("--classifier", default="none", help="'none' (skip crop-type stage), 'default' or a folder")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.child:
        return _child(a)
    sec = run_pipeline(quick=a.quick)
    print(pipeline_table(sec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["REGIONS", "add_ratios", "engine_only", "pipeline_table", "region_box", "run_one", "run_pipeline", "write_aoi"]
