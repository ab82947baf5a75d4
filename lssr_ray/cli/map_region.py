"""Map a region: AOI GeoJSON -> chips -> Ray Data (read -> LSSR actors -> commit -> blend/write) -> Zarr.

Usage:
    lssr-map --aoi examples/flanders_31UDS.geojson                          # offline demo
    lssr-map --aoi AOI.geojson --catalog s3://lssr-archive/catalog.json \\
        --start 2018-06-01 --end 2018-09-30 --out s3://lssr-out/flanders.zarr --engine onnxruntime
    ray job submit --address http://127.0.0.1:8265 -- python jobs/map_region.py --aoi ... --catalog s3://...
    lssr-map --aoi AOI.geojson --stage data                                  # inputs cube only (no model)
    lssr-map --aoi AOI.geojson --stac-url https://cmr.earthdata.nasa.gov/stac/LPCLOUD \\
        --start 2021-07-01 --end 2021-07-31 --out out/aoi.zarr               # search, then map

Rerunning with the same settings resumes (committed chips are skipped); a killed run's lock is
taken over because the run id is a hash of the settings. Exit code 2 on bad input, with a
one-line message on stderr (also for mistakes found inside Ray workers); --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from lssr_ray.cli.args import add_config_args, config_from_args, configure_logging
from lssr_ray.config import MapConfig
from lssr_ray.errors import one_line, user_error

FLAGS = {"num_actors": "--actors"}
"""Options whose name is not the field's (kept from before the options were generated)."""
NOT_OPTIONS = ("output_resolution", "scale")
"""Grid fields fixed by the model (10 m output, x3): not offered on the command line."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(ap, MapConfig, flags=FLAGS, exclude=NOT_OPTIONS)
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--summary-json", help="also write the final summary as JSON here")
    ap.add_argument("--stage", default="map", choices=["map", "data"],
                    help="map: the full job; data: only the aligned input cube (no model)")
    ap.add_argument("--debug", action="store_true",
                    help="show the traceback of an input error too, and debug log messages")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _data_stage(cfg: MapConfig) -> int:
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.cube import build_cube
    from lssr_ray.mapping.plan import data_stage

    aoi = read_aoi(cfg.aoi)
    out = Path(cfg.out) if cfg.out else Path("out") / aoi.name
    stage = data_stage(cfg, aoi)
    print(f"AOI {aoi.source}: {aoi.area_km2:.2f} km2, {len(stage.granules)} granules in {cfg.catalog}")
    for note in stage.aoi.notes + tuple(filter(None, [stage.coverage_note()])):
        print(f"NOTE: {note}", file=sys.stderr)
    print(stage.plan.summary())
    result = build_cube(stage.plan, stage.granules, out, aux=stage.aux)
    print(result.table())
    print(result.summary())
    return 0


def searched_catalog(cfg: MapConfig) -> MapConfig:
    """``cfg`` mapping from a catalog searched at ``cfg.stac_url`` (saved as ``<out>.search/``; a rerun
    reuses it unless ``--overwrite``, so a resumed run keeps its inputs)."""
    import dataclasses

    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.stac_search import run_search, write_catalog
    from lssr_ray.errors import ConfigError, CoverageError
    from lssr_ray.fileio import filesystem, is_s3

    if not (cfg.start and cfg.end):
        raise ConfigError("--stac-url needs --start and --end (the search's date range)")
    aoi = read_aoi(cfg.aoi)
    saved = (cfg.out or str(Path.cwd() / "out" / f"{aoi.name}.zarr")).rstrip("/") + ".search"
    href = f"{saved}/catalog.json"
    fs, path = filesystem(href) if is_s3(href) else (None, href)
    if cfg.overwrite or not (fs.exists(path) if fs else Path(path).is_file()):
        res = run_search(aoi, cfg.start, cfg.end, stac_url=cfg.stac_url)
        if not len(res.items):
            raise CoverageError(f"no HLS items over {cfg.aoi} from {cfg.start} to {cfg.end} at {cfg.stac_url}")
        href = write_catalog(res.items, saved)
        print(f"searched {cfg.stac_url}: {len(res.items)} items in {res.pages} page(s) -> {href}")
    else:
        print(f"using the saved search {href} (--overwrite searches again)")
    return dataclasses.replace(cfg, catalog=href)


def _ask(question: str) -> bool:
    """A yes/no question on the terminal (a long run's confirmation)."""
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    configure_logging(a.debug)
    t0 = time.perf_counter()
    started = False
    try:
        cfg = config_from_args(a, MapConfig)
        if cfg.stac_url:
            cfg = searched_catalog(cfg)
        if a.stage == "data":
            rc = _data_stage(cfg)
            print(f"total wall time {time.perf_counter() - t0:.1f} s")
            return rc
        import ray

        from lssr_ray.mapping.pipeline import run_map

        started = not ray.is_initialized()
        summary = run_map(cfg, progress=not a.no_progress, confirm=_ask if sys.stdin.isatty() else None)
    except Exception as exc:  # a user mistake (also from a Ray worker) -> one line; a bug is re-raised
        err = user_error(exc)
        if err is None:
            raise
        if a.debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if started and a.stage == "map":
            import ray

            if ray.is_initialized():
                ray.shutdown()
    print(summary.text())
    if a.summary_json:
        Path(a.summary_json).write_text(json.dumps(summary.to_dict(), indent=1, default=str))
    return 0
