"""An Iowa-size dry run of the mapping job: real AOI, real MGRS tiles, synthetic pixels, bicubic.

    .venv/bin/python bench/iowa_dry_run.py                       # 1k chips run, all chips planned
    .venv/bin/python bench/iowa_dry_run.py --run-chips 1000 10000 --dates 2 --block 4   # 16 chips per read (default 8: 64)

What it builds (under ``--work``, default ``/tmp/lssr-iowa-dry-run``):

* **catalog**: every real Sentinel-2 / HLS MGRS tile whose footprint meets ``examples/iowa.geojson``
  (:func:`iowa_tiles`: ``lssr_ray.data.mgrs.mgrs_tiles`` on a 20 km probe lattice in each UTM zone
  the AOI touches, kept where the tile's 100 km square lies in its zone and its 109.8 km footprint
  meets the AOI), one HLSL30 item per tile and date in the real CMR-STAC shape
  (``scripts/make_hls_cogs.item_for`` on the recorded real item template: ids, datetimes,
  footprints, ``eo:cloud_cover``), written by ``scripts/make_hls_cogs.write_catalog``;
* **granules that synthesise pixels**: each band asset is a GDAL VRT on the tile's exact 30 m grid
  (3660 x 3660 px, the tile's UTM zone, nodata / scale as HLS v2.0) tiling the bundled real
  Landsat-8 granule's band file (603 x 627 px) over the tile. The readers open them through the
  same ``open_raster`` / ``read_raster`` / ``read_lowres`` path as a COG (windowed reads on the
  tile's lattice, warps for tiles of zones 14 and 16), so nothing in the pipeline is bypassed;
  only the asset hrefs (``./<id>.<band>.vrt`` next to the item) differ from a real item's;
* **the mapping job's own steps**, engine ``bicubic`` (no model): ``plan_map`` over the whole
  Iowa AOI, the store created for the whole Iowa grid (``open_or_create_store``), then Ray Data
  stage 1 (``infer_and_commit``: read -> bicubic -> atomic partials) and stage 2
  (``blend_and_write``) over a square block of ``N`` chips at the centre of the plan (the same
  grid, store and metadata as a whole-Iowa run; the other chips are planned but not run).
  Finalize (counts, quicklooks, crop type) is not run: it reads the whole map.

Measured per run size: planning time, store creation time, driver CPU milliseconds per chip-date in
stage 1 and per chunk in stage 2 (Ray Data's streaming executor runs in the driver, so this is the
orchestration overhead; the RSS sampler's own CPU is subtracted), per-actor milliseconds per chip
(read, bicubic, commit; from the committed records), wall time, and the peak RSS of the driver and
of every Ray actor. ``all`` (every chip of the plan) is measured for planning and store creation
and the stage-1 work items; stage 1 + 2 over all 52,537 chips took 1 h 02 min on 2 cores, ~37 GB of
partials and a 15 GB store (``--run-chips 52537 --section iowa_dry_run_all``: its own section, so the
1k / 10k rows stay).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.memory import TreeRssSampler
from lssr_ray.config import OUTPUT_BANDS
from lssr_ray.data import hls
from lssr_ray.errors import ConfigError, LssrError

IOWA = REPO / "examples" / "iowa.geojson"
SOURCE = REPO / "data" / "archive" / "HLSL30" / "HLS.L30.T16RDV.2015216T161921.v2.0"
"""Bundled real Landsat-8 granule whose band files every synthetic granule tiles."""
DATES = ("2021-06-29T16:53:11Z", "2021-07-15T16:53:20Z")
"""Sensing times of the generated items (the first is the day of the real item
HLS.L30.T15TVG.2021180T165311.v2.0; the second one Landsat revisit later)."""
BANDS = (*(hls.band_id("L30", b) for b in OUTPUT_BANDS), "Fmask")
PROBE_M = 20_000
"""Spacing of the probe points that find the tiles (well below the 9.8 km tile overlap + 100 km)."""
GOALS = {"driver_ms_per_chip": 5.0, "driver_peak_mb": 1024.0}


# --------------------------------------------------------------------------- catalog


def iowa_tiles(aoi: Any) -> list[str]:
    """MGRS tile ids whose 109.8 km footprint meets ``aoi`` (an :class:`~lssr_ray.data.aoi.AOI`)."""
    import numpy as np
    import shapely
    from pyproj import Transformer
    from shapely.geometry import box

    from lssr_ray.data.aoi import to_crs
    from lssr_ray.data.mgrs import TILE_SIZE_M, mgrs_tiles, square_origin, tile_upper_left

    lon0, _, lon1, _ = aoi.geometry.bounds
    found: set[str] = set()
    for zone in range(int((lon0 + 180) // 6) + 1, int((lon1 + 180) // 6) + 2):
        epsg = 32600 + zone
        to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform

        def lonlat(x0: float, y0: float, size: float, to_ll: Any = to_ll) -> Any:
            edge = box(x0, y0, x0 + size, y0 + size).segmentize(5_000)  # curved in lon/lat
            return shapely.transform(edge, to_ll, interleaved=False)

        strip = box(zone * 6 - 186, -80, zone * 6 - 180, 84)
        xmin, ymin, xmax, ymax = to_crs(aoi.geometry, f"EPSG:{epsg}").bounds
        for x in np.arange(xmin - PROBE_M, xmax + PROBE_M, PROBE_M):
            for y in np.arange(ymin - PROBE_M, ymax + PROBE_M, PROBE_M):
                for tile in mgrs_tiles((x, y, x + 1, y + 1), epsg):
                    if tile in found:
                        continue
                    sx, sy = square_origin(tile)
                    tx, ty = tile_upper_left(tile)
                    in_zone = lonlat(sx, sy, 100_000).intersects(strip)
                    if in_zone and lonlat(tx, ty - TILE_SIZE_M, TILE_SIZE_M).intersects(aoi.geometry):
                        found.add(tile)
    return sorted(found)


def vrt_xml(tile: str, source: Path) -> str:
    """A GDAL VRT on ``tile``'s 30 m HLS grid that repeats ``source`` (a one-band raster)."""
    import rasterio

    epsg, (a, _, c, _, e, f), (rows, cols) = hls.tile_grid(tile)
    with rasterio.open(source) as src:
        h, w, dtype, nodata = src.height, src.width, src.dtypes[0], src.nodata
        scale, tags = src.scales[0], src.tags(1)
    gdal_type = {"int16": "Int16", "uint8": "Byte"}[dtype]
    meta = "".join(f'<MDI key="{k}">{v}</MDI>' for k, v in sorted(tags.items()))
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
        f'<DstRect xOff="{x0}" yOff="{y0}" xSize="{w}" ySize="{h}"/></SimpleSource>'
        for y0 in range(0, rows, h) for x0 in range(0, cols, w))
    scaling = f"<Offset>0</Offset><Scale>{scale}</Scale>" if dtype == "int16" else ""
    return (f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}"><SRS>EPSG:{epsg}</SRS>'
            f"<GeoTransform>{c}, {a}, 0, {f}, 0, {e}</GeoTransform>"
            f'<VRTRasterBand dataType="{gdal_type}" band="1"><Metadata>{meta}</Metadata>'
            f"<NoDataValue>{nodata:g}</NoDataValue>{scaling}{sources}</VRTRasterBand></VRTDataset>\n")


def make_catalog(folder: Path, tiles: list[str], *, dates: int = 1) -> Path:
    """Items for ``tiles`` x the first ``dates`` of :data:`DATES` with synthetic-pixel VRT assets;
    returns the ``catalog.json`` path."""
    from affine import Affine

    from scripts.make_hls_cogs import _l30_item as l30_item
    from scripts.make_hls_cogs import cloud_cover, default_template, item_for, write_catalog

    if not 1 <= dates <= len(DATES):
        raise ConfigError(f"--dates must be 1..{len(DATES)}, got {dates}")
    import rasterio

    with rasterio.open(SOURCE / f"{SOURCE.name}.Fmask.tif") as src:
        cover = cloud_cover(src.read(1))
    template = l30_item(default_template())
    items, vrts = [], {}
    for when in DATES[:dates]:
        t = dt.datetime.fromisoformat(when)
        for tile in tiles:
            epsg, transform, shape = hls.tile_grid(tile)
            gid = hls.format_name("L30", tile, t)
            files = {b: Path(f"{gid}.{b}.vrt") for b in BANDS}
            item = item_for({"id": gid, "tile": tile, "epsg": epsg, "transform": Affine(*transform), "shape": shape,
                             "when": t, "cloud_cover": cover, "files": files}, template)
            for band, name in files.items():  # the synthetic pixels stand in for the COG
                item["assets"][band] = {**item["assets"][band], "href": f"./{name}", "type": "application/xml"}
                vrts[(gid, name)] = (tile, band)
            items.append(item)
    catalog = write_catalog(items, folder)
    for (gid, name), (tile, band) in vrts.items():
        (folder / gid / name).write_text(vrt_xml(tile, SOURCE / f"{SOURCE.name}.{band}.tif"))
    return catalog


# --------------------------------------------------------------------------- runs


def centre_block(plan: Any, n: int) -> Any:
    """``plan`` (a :class:`~lssr_ray.mapping.plan.MapPlan`) with only the ``n`` chips nearest the
    centre of its chip lattice (Chebyshev distance, then plan order): a square block."""
    chips = plan.stage.plan.chips
    if not 1 <= n <= len(chips):
        raise ConfigError(f"run size must be 1..{len(chips)} chips, got {n}")
    r0 = (min(c.row for c in chips) + max(c.row for c in chips)) / 2
    c0 = (min(c.col for c in chips) + max(c.col for c in chips)) / 2
    keep = set(sorted(range(len(chips)), key=lambda i: (max(abs(chips[i].row - r0), abs(chips[i].col - c0)), i))[:n])
    sub = dataclasses.replace(plan.stage.plan, chips=tuple(c for i, c in enumerate(chips) if i in keep))
    return dataclasses.replace(plan, stage=dataclasses.replace(plan.stage, plan=sub))


class _CountedSampler(TreeRssSampler):
    """The RSS sampler, counting its own CPU seconds (subtracted from the driver's)."""

    cpu_s = 0.0

    def _sample(self) -> None:
        t = time.thread_time()
        super()._sample()
        self.cpu_s += time.thread_time() - t


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """The driver's peak RSS since it started (the kernel's high-water mark, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plan_all(cfg: Any) -> tuple[Any, dict[str, Any]]:
    """``plan_map`` over the whole AOI and what the driver pays for it (timed, RSS)."""
    from lssr_ray.mapping.plan import plan_map, work_items

    t = time.perf_counter()
    plan = plan_map(cfg)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    items = work_items(plan, {})
    return plan, {"chips": len(plan.chip_ids), "chip_dates": len(plan.chip_ids) * len(plan.times),
                  "granules": len(plan.stage.granules), "plan_s": round(plan_s, 3),
                  "work_items": len(items), "work_items_s": round(time.perf_counter() - t, 3),
                  "work_items_mb": round(len(pickle.dumps(items)) / 2**20, 2),
                  "chip_plan_pickle_mb": round(len(pickle.dumps(plan.stage.plan)) / 2**20, 2),
                  "output_px_per_date": int(plan.stage.plan.grid.output_shape[0] * plan.stage.plan.grid.output_shape[1]),
                  "output_shape": list(plan.stage.plan.grid.output_shape), "driver_rss_mb": round(_rss_mb(), 1)}


def create(plan: Any, store: str) -> float:
    """Create the run's store for the whole grid; seconds."""
    from lssr_ray.mapping.pipeline import open_or_create_store

    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    open_or_create_store(dataclasses.replace(plan, store=store), {})
    return time.perf_counter() - t


def run_block(plan: Any, n: int, store: str) -> dict[str, Any]:
    """Store creation, stage 1 and stage 2 over the centre block of ``n`` chips; the figures."""
    import numpy as np

    from lssr_ray.mapping.lock import StoreLock
    from lssr_ray.mapping.plan import committed
    from lssr_ray.mapping.stage_blend import blend_and_write
    from lssr_ray.mapping.stage_infer import infer_and_commit

    sub = dataclasses.replace(centre_block(plan, n), store=store)
    create_s = create(sub, store)
    recs: list[dict[str, Any]] = []
    with _CountedSampler(os.getpid(), interval=0.5) as sampler, StoreLock(store, sub.run_id) as lock:
        c0, s0, t0 = time.process_time(), sampler.cpu_s, time.perf_counter()
        infer = infer_and_commit(sub, committed(sub, {}), lock=lock, storage_options={}, progress=False,
                                 on_commit=lambda r: recs.append({k: r[k] for k in ("status", "read_s", "infer_s", "commit_s")}))
        c1, s1, t1 = time.process_time(), sampler.cpu_s, time.perf_counter()
        blend = blend_and_write(sub, lock=lock, storage_options={}, progress=False)
        c2, s2, t2 = time.process_time(), sampler.cpu_s, time.perf_counter()
    chip_dates = n * len(sub.times)
    per_chip = {k: round(1e3 * float(np.mean([r[k] for r in recs])), 2) for k in ("read_s", "infer_s", "commit_s")}
    mem = sampler.by_role()
    return {
        "chips": n, "chip_dates": chip_dates, "ok": sum(r["status"] == "ok" for r in recs),
        "store_create_s": round(create_s, 3),
        "stage1_s": round(t1 - t0, 2), "stage2_s": round(blend.seconds, 2), "chunks_written": blend.chunks_written,
        "driver_ms_per_chip_stage1": round(1e3 * ((c1 - c0) - (s1 - s0)) / chip_dates, 3),
        "driver_ms_per_chunk_stage2": round(1e3 * ((c2 - c1) - (s2 - s1)) / chip_dates, 3),
        "driver_core_fraction_stage1": round(((c1 - c0) - (s1 - s0)) / (t1 - t0), 4),
        "driver_core_fraction_stage2": round(((c2 - c1) - (s2 - s1)) / (t2 - t1), 4),
        "wall_ms_per_chip_stage1": round(1e3 * (t1 - t0) / chip_dates, 2),
        "wall_ms_per_chunk_stage2": round(1e3 * blend.seconds / chip_dates, 2),
        "actor_ms_per_chip": {k.removesuffix("_s"): v for k, v in per_chip.items()},
        "computed": infer.computed, "skipped": infer.skipped,
        "peak_rss_mb": {"driver": max(mem.get("driver", [0.0])), **{k: v for k, v in mem.items() if k.endswith("actor")}},
        "sampler_cpu_s": round(sampler.cpu_s, 2), "driver_peak_rss_mb_since_start": round(_peak_rss_mb(), 1),
    }


def _cfg(catalog: Path, aoi: Path, out: str, block: int | None = None) -> Any:
    from lssr_ray.config import MapConfig

    extra = {} if block is None else {"block": block}
    return MapConfig(aoi=str(aoi), catalog=str(catalog), out=out, engine="bicubic", quicklook=False,
                     yes=True, resume=True, read_actors=1, read_cpus=0.5, num_actors=1, actor_cpus=0.5, **extra)


def dry_run(work: Path, *, run_chips: list[int], dates: int = 1, aoi: Path = IOWA,
            tiles: list[str] | None = None, block: int | None = None, log=print,
            on_run: Any = None) -> dict[str, Any]:
    """The whole dry run; returns the ``iowa_dry_run`` results section. ``on_run(section)`` gets
    the section after planning and after each finished run size (saved as it goes, so a long run
    stopped early keeps the sizes it finished)."""
    import ray

    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.mapping.ray_env import init_ray

    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    tiles = tiles or iowa_tiles(read_aoi(aoi))
    catalog = make_catalog(work / "catalog", tiles, dates=dates)
    cat_s = time.perf_counter() - t
    log(f"catalog: {len(tiles)} tiles x {dates} date(s), VRT granules ({cat_s:.1f} s) -> {catalog}")
    cfg = _cfg(catalog, aoi, str(work / "store.zarr"), block)
    plan, planned = plan_all(cfg)
    planned["store_create_s"] = round(create(plan, str(work / "all.zarr")), 3)
    planned["driver_rss_mb_after_store"] = round(_rss_mb(), 1)
    planned["driver_peak_rss_mb"] = round(_peak_rss_mb(), 1)
    log(f"planned {planned['chips']:,} chips x {len(plan.times)} date(s) on a {planned['output_shape']} grid "
        f"in {planned['plan_s']:.1f} s; store in {planned['store_create_s']:.2f} s")
    runs: list[dict[str, Any]] = []

    def section() -> dict[str, Any]:
        return {"aoi": str(Path(aoi).relative_to(REPO)) if Path(aoi).is_relative_to(REPO) else str(aoi),
                "tiles": tiles, "dates": dates, "engine": "bicubic", "block": cfg.block,
                "batch_size": cfg.batch_size, "catalog_s": round(cat_s, 2), "planned": planned, "runs": list(runs),
                "goals": GOALS, "granules": "GDAL VRTs tiling the bundled "
                f"Landsat-8 granule {SOURCE.name} on each tile's 30 m grid (local files)",
                "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}

    started = init_ray(cfg)
    try:
        for n in run_chips:
            if on_run is not None:
                on_run(section())
            runs.append(run_block(plan, min(n, planned["chips"]), str(work / f"run{n}.zarr")))
            log(row(runs[-1]))
    finally:
        if started:
            ray.shutdown()
    return section()


HEADER = (f"{'chips':>7} {'chip-dates':>10} {'store s':>8} {'st1 s':>7} {'st2 s':>7} {'drv ms/chip':>11} "
          f"{'drv ms/chunk':>12} {'read ms':>8} {'bicubic ms':>10} {'commit ms':>9} {'driver MiB':>10} {'actor MiB':>9}")


def row(r: dict[str, Any]) -> str:
    a, m = r["actor_ms_per_chip"], r["peak_rss_mb"]
    actors = max((v for k, vs in m.items() if k != "driver" for v in vs), default=0.0)
    return (f"{r['chips']:>7,} {r['chip_dates']:>10,} {r['store_create_s']:>8.2f} {r['stage1_s']:>7.1f} "
            f"{r['stage2_s']:>7.1f} {r['driver_ms_per_chip_stage1']:>11.2f} {r['driver_ms_per_chunk_stage2']:>12.2f} "
            f"{a['read']:>8.1f} {a['infer']:>10.1f} {a['commit']:>9.1f} {m['driver']:>10.0f} {actors:>9.0f}")


def table(section: dict[str, Any]) -> str:
    p = section["planned"]
    lines = [f"Iowa dry run: {len(section['tiles'])} MGRS tiles x {section['dates']} date(s), engine bicubic",
             (f"all {p['chips']:,} chips ({p['output_px_per_date']:,} px per date): plan {p['plan_s']:.1f} s, "
             f"work items {p['work_items']:,} in {p['work_items_s']:.2f} s ({p['work_items_mb']} MB), "
             f"chip plan pickled {p['chip_plan_pickle_mb']} MB, store {p['store_create_s']:.2f} s, "
             f"driver RSS {p['driver_rss_mb_after_store']:.0f} MiB"), HEADER]
    return "\n".join([*lines, *(row(r) for r in section["runs"])])


def markdown(section: dict[str, Any]) -> str:
    """The section as Markdown rows (for bench/RESULTS.md)."""
    p = section["planned"]
    out = ["| chips | chip-dates | plan s | store create s | work items (s) | driver RSS after plan + store MiB |",
           "|---|---|---|---|---|---|",
           (f"| all {p['chips']:,} | {p['chip_dates']:,} | {p['plan_s']:.1f} | {p['store_create_s']:.1f} | "
           f"{p['work_items']:,} ({p['work_items_s']:.2f}) | {p['driver_rss_mb']:.0f} -> {p['driver_rss_mb_after_store']:.0f} |"),
           "", ("| chips run | store create s | stage 1 s | stage 2 s | driver ms / chip (stage 1) | driver ms / chunk "
           "(stage 2) | driver core share st1 / st2 | actor ms / chip read / bicubic / commit | wall ms / chip st1 / st2 "
           "| peak RSS MiB driver | peak RSS MiB actors |"), "|" + "---|" * 11]
    for r in section["runs"]:
        a, m = r["actor_ms_per_chip"], r["peak_rss_mb"]
        share = (f"{r['driver_ms_per_chip_stage1'] / r['wall_ms_per_chip_stage1']:.1%} / "
                 f"{r['driver_ms_per_chunk_stage2'] / r['wall_ms_per_chunk_stage2']:.1%}")
        actors = ", ".join(f"{k.removesuffix('_actor')} {max(v):.0f}" for k, v in sorted(m.items()) if k != "driver")
        out.append(f"| {r['chips']:,} | {r['store_create_s']:.1f} | {r['stage1_s']:.0f} | {r['stage2_s']:.0f} | "
                   f"**{r['driver_ms_per_chip_stage1']:.1f}** | {r['driver_ms_per_chunk_stage2']:.1f} | {share} | "
                   f"{a['read']:.0f} / {a['infer']:.0f} / {a['commit']:.0f} | {r['wall_ms_per_chip_stage1']:.0f} / "
                   f"{r['wall_ms_per_chunk_stage2']:.0f} | **{m['driver']:.0f}** | {actors} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lssr-iowa-dry-run"), help="catalog and stores go here")
    ap.add_argument("--run-chips", type=int, nargs="*", default=[1000], help="chip counts to run stages 1 + 2 on")
    ap.add_argument("--dates", type=int, default=1, help=f"dates per tile (1..{len(DATES)})")
    ap.add_argument("--tiles", nargs="*", help="MGRS tiles (default: every tile meeting the AOI)")
    ap.add_argument("--block", type=int, help="chips per read block edge (default: the mapping job's)")
    ap.add_argument("--results", type=Path, default=HERE / "results.json", help="merge the section into this JSON")
    ap.add_argument("--section", default="iowa_dry_run",
                    help="section of --results to write (another name keeps earlier runs' rows, e.g. iowa_dry_run_all)")
    ap.add_argument("--markdown", action="store_true", help="print the section of --results as Markdown and exit")
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown(json.loads(a.results.read_text())[a.section]))
        return 0
    t = time.perf_counter()
    command = "bench/iowa_dry_run.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(sec: dict[str, Any], *, finished: bool = False) -> None:
        res = json.loads(a.results.read_text()) if a.results.is_file() else {}
        res[a.section] = {**sec, "command": command, "finished": finished}
        res.setdefault("runs", {})[a.section] = {"date_utc": sec["date_utc"], "quick": False,
                                                      "seconds": round(time.perf_counter() - t, 1),
                                                      "loadavg_1_5_15": sec["loadavg_1_5_15"]}
        a.results.write_text(json.dumps(res, indent=1) + "\n")

    try:
        sec = dry_run(a.work, run_chips=a.run_chips, dates=a.dates, tiles=a.tiles, block=a.block, on_run=save)
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(sec))
    save(sec, finished=True)
    print(f"wrote section {a.section} of {a.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
