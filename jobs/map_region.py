"""Map a region: AOI GeoJSON -> chips -> Ray Data (read -> LSSR actors -> commit -> blend/write) -> Zarr.

Usage:
    .venv/bin/python jobs/map_region.py --aoi examples/flanders_31UDS.geojson      # offline demo
    .venv/bin/python jobs/map_region.py --aoi AOI.geojson --catalog s3://lssr-archive/catalog.json \\
        --start 2018-06-01 --end 2018-09-30 --out s3://lssr-out/flanders.zarr --engine onnxruntime
    ray job submit --address http://127.0.0.1:8265 -- python jobs/map_region.py --aoi ... --catalog s3://...
    .venv/bin/python jobs/map_region.py --aoi AOI.geojson --stage data   # inputs cube only (no model)

Rerunning with the same settings resumes (committed chips are skipped); a killed run's lock is
taken over because the run id is a hash of the settings. Exit code 2 on bad input, with a
one-line message on stderr (also for mistakes found inside Ray workers); --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from lssr_ray.config import DEFAULT_CHECKPOINT_DIR, GridConfig, MapConfig
from lssr_ray.errors import one_line, user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = MapConfig(aoi="")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aoi", required=True, help="AOI GeoJSON (Polygon/MultiPolygon/Feature[Collection], lon/lat)")
    ap.add_argument("--catalog", default=d.catalog, help="STAC catalog href, local or s3:// (default: the bundled archive)")
    ap.add_argument("--start", help="first acquisition date, ISO (e.g. 2018-06-01)")
    ap.add_argument("--end", help="last acquisition date, ISO (inclusive)")
    ap.add_argument("--out", help="output store, local path or s3://bucket/name.zarr (default out/<aoi>.zarr)")
    ap.add_argument("--checkpoint", help=f"adapter checkpoint folder (default {DEFAULT_CHECKPOINT_DIR})")
    ap.add_argument("--base", default=d.base, help="frozen SD base folder or s3:// URI")
    ap.add_argument("--engine", default=d.engine, choices=["auto", "torch", "onnxruntime", "tensorrt", "bicubic"],
                    help="inference engine; bicubic: no model, x3 bicubic (dry runs)")
    ap.add_argument("--uncertainty", action="store_true",
                    help="also write the per-pixel uncertainty layer (spread over test-time flips/rotations "
                         "and SAR dropout: several forward passes per chip)")
    ap.add_argument("--dates", default=d.dates, choices=["all", "clearest"],
                    help="all: one time step per acquisition date; clearest: the clearest date per chip")
    ap.add_argument("--actors", type=int, default=d.num_actors, help="LSSR actors (0: one per GPU, else 1)")
    ap.add_argument("--actor-cpus", type=float, default=d.actor_cpus, help="CPUs per LSSR actor")
    ap.add_argument("--read-cpus", type=float, default=d.read_cpus, help="CPUs per read/commit/blend actor")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="chips per model call")
    ap.add_argument("--block", type=int, default=d.block, help="read block edge in chips (one read per block)")
    ap.add_argument("--chip-size", type=int, default=d.chip_size, help="chip edge in 30 m input pixels")
    ap.add_argument("--overlap", type=int, default=d.overlap, help="overlap between chips in input pixels (even)")
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="resume an existing store with the same settings (default on)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing store")
    ap.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNGs")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--ray-address", help="Ray cluster address (default: auto inside `ray job submit`, else local)")
    ap.add_argument("--classifier", default=None,
                    help="crop-type classifier folder for the final crop_type stage (default "
                         "models/croptype-lgbm if present; 'none' skips the stage)")
    ap.add_argument("--summary-json", help="also write the final summary as JSON here")
    ap.add_argument("--yes", action="store_true",
                    help="start a run estimated longer than --confirm-over-s without asking")
    ap.add_argument("--confirm-over-s", type=float, default=d.confirm_over_s,
                    help="runs estimated longer than this (s) need --yes or a yes on a terminal")
    ap.add_argument("--stage", default="map", choices=["map", "data"],
                    help="map: the full job; data: only the aligned input cube (no model)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an input error too")
    return ap.parse_args(argv)


def _data_stage(a: argparse.Namespace) -> int:
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import build_cube, plan_data_stage

    cfg = GridConfig(chip_size=a.chip_size, overlap=a.overlap)
    aoi = read_aoi(a.aoi)
    out = Path(a.out) if a.out else Path("out") / aoi.name
    stage = plan_data_stage(aoi, open_catalog(a.catalog), config=cfg, start=a.start, end=a.end)
    print(f"AOI {aoi.source}: {aoi.area_km2:.2f} km2, {len(stage.granules)} granules in {a.catalog}")
    for note in stage.aoi.notes + tuple(filter(None, [stage.coverage_note()])):
        print(f"NOTE: {note}", file=sys.stderr)
    print(stage.plan.summary())
    result = build_cube(stage.plan, stage.granules, out, aux=stage.aux)
    print(result.table())
    print(result.summary())
    return 0


def _ask(question: str) -> bool:
    """A yes/no question on the terminal (a long run's confirmation)."""
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


class _CliFormat(logging.Formatter):
    """Notes and the plan as they are; warnings and errors with their level in front."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname}: {msg}"


@contextlib.contextmanager
def _library_log_to_stderr():
    """The package's log records (INFO and up) on stderr while the job runs."""
    lib = logging.getLogger("lssr_ray")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormat("%(message)s"))
    level = lib.level
    lib.addHandler(handler)
    lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    with _library_log_to_stderr():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    started = False
    try:
        if a.stage == "data":
            rc = _data_stage(a)
            print(f"total wall time {time.perf_counter() - t0:.1f} s")
            return rc
        from lssr_ray.mapping.pipeline import run_map

        cfg = MapConfig(
            aoi=a.aoi, catalog=a.catalog, start=a.start, end=a.end, out=a.out, checkpoint=a.checkpoint,
            base=a.base, engine=a.engine, uncertainty=a.uncertainty, dates=a.dates, chip_size=a.chip_size, overlap=a.overlap,
            batch_size=a.batch_size, num_actors=a.actors, actor_cpus=a.actor_cpus, read_cpus=a.read_cpus,
            block=a.block, resume=a.resume, overwrite=a.overwrite, quicklook=not a.no_quicklook,
            ray_address=a.ray_address, classifier=a.classifier, yes=a.yes, confirm_over_s=a.confirm_over_s,
        )
        import ray

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


if __name__ == "__main__":
    raise SystemExit(main())
