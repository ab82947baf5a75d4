"""Map a region: AOI GeoJSON -> chip plan -> aligned input cube (-> super-resolved Zarr, later).

Usage:
    .venv/bin/python jobs/map_region.py --aoi examples/flanders_31UDS.geojson
    .venv/bin/python jobs/map_region.py --aoi AOI.geojson --catalog s3://lssr-archive/catalog.json \\
        --start 2018-06-01 --end 2018-09-30 --out out/flanders --chip-size 64 --overlap 8

Only the data stage runs for now (the model stage is not wired in yet); the script says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from lssr_ray.config import REPO_ROOT, GridConfig
from lssr_ray.errors import LssrError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = GridConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aoi", required=True, help="AOI GeoJSON (Polygon/MultiPolygon/Feature[Collection], lon/lat)")
    ap.add_argument("--catalog", default=str(REPO_ROOT / "data" / "archive" / "catalog.json"),
                    help="STAC catalog href, local or s3:// (default: the bundled archive)")
    ap.add_argument("--start", help="first acquisition date, ISO (e.g. 2018-06-01)")
    ap.add_argument("--end", help="last acquisition date, ISO (inclusive)")
    ap.add_argument("--out", help="output folder (default out/<aoi stem>)")
    ap.add_argument("--chip-size", type=int, default=d.chip_size, help="chip edge in 30 m input pixels")
    ap.add_argument("--overlap", type=int, default=d.overlap, help="overlap between chips in input pixels (even)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    try:
        from lssr_ray.data.aoi import read_aoi
        from lssr_ray.data.catalog import open_catalog
        from lssr_ray.data.cube import build_cube, plan_data_stage

        cfg = GridConfig(chip_size=a.chip_size, overlap=a.overlap)
        aoi = read_aoi(a.aoi)
        out = Path(a.out) if a.out else Path("out") / aoi.name
        for note in aoi.notes:
            print(f"note: {note}")
        stage = plan_data_stage(aoi, open_catalog(a.catalog), config=cfg, start=a.start, end=a.end)
        print(f"AOI {aoi.source}: {aoi.area_km2:.2f} km2, {len(stage.granules)} granules in {a.catalog}")
        print(stage.plan.summary())
        result = build_cube(stage.plan, stage.granules, out, aux=stage.aux)
    except LssrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    print(result.summary())
    print("model stage: not run yet (the super-resolution stage is not wired into this job); "
          f"inputs are in {result.path} and {out / 'chips.json'}")
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
