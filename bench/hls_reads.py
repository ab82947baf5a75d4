"""Read benchmark: bytes fetched per output km2 and requests per chip, reading full-size HLS COGs
from S3, block reads vs per-chip reads.

Setup: one full-size HLS v2.0-format L30 granule (tile 15TVG, 3660 x 3660 px, the real file
layout: ``scripts/make_hls_cogs.py``) in bucket ``lp-prod-protected`` of a loopback S3 server
(``moto_server``), a catalog of real-shaped CMR-STAC items, read with ``asset_access="s3"``.
Clients talk to a :class:`lssr_ray.data.s3server.CountingProxy` in front of the server, which
counts every request (per HTTP method) and every response body byte: what really went over the
wire, GDAL's own caches and request merging included.

Each configuration runs ``lssr_ray.data.cube.read_chips`` over a square AOI inside the tile
(``--aoi-km``, default 15 km) in a **fresh child process** (GDAL's per-process caches start
empty, as in a new Ray worker): ``block`` = chips per read-block edge; ``block=1`` reads every
chip on its own (one read per chip per band), ``block=N`` reads each band once per N x N chips
and cuts the chips from it. GDAL settings are the project's (``lssr_ray.fileio.gdal_env``).

Reported per configuration: requests (GET / HEAD / total), requests per chip, bytes fetched,
bytes per output km2 (km2 = chips read x chip core area, 1.68 km x 1.68 km), bytes per AOI km2,
read amplification = bytes fetched / (granule bytes per km2 x output km2) (1.0 = every byte of
the seven files under the area fetched once), and wall time.

    .venv/bin/python bench/hls_reads.py                  # prints the table, writes --out's hls_reads
    .venv/bin/python bench/run.py --sections hls_reads   # the same through the suite
"""

from __future__ import annotations

import argparse
import importlib.util
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

TILE = "15TVG"
"""The granule's MGRS tile (central Iowa, UTM zone 15)."""
BLOCKS = (4, 2, 1)
"""Chips per read-block edge: 4 (the library default), 2 (the mapping job's default), 1 (per chip)."""
CORE_KM2 = 1.68 * 1.68
"""Ground area of one chip core: (64 - 8) px x 30 m squared."""


def make_hls_cogs_module() -> Any:
    """``scripts/make_hls_cogs.py`` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location("make_hls_cogs", REPO / "scripts" / "make_hls_cogs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def aoi_box(tile: str, km: float) -> tuple[tuple[float, float, float, float], str]:
    """A ``km`` x ``km`` UTM box 20 km inside the tile's north-west corner, and its CRS."""
    from lssr_ray.data import hls

    epsg, t, _ = hls.tile_grid(tile)
    x0, y1 = t[2] + 20_000.0, t[5] - 20_000.0
    return (x0, y1 - km * 1000.0, x0 + km * 1000.0, y1), f"EPSG:{epsg}"


def read_all(catalog: str, aoi_path: str, block: int) -> dict[str, Any]:
    """Child process: read every chip of the AOI with ``read_chips(block=...)``; chip counts + time."""
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.catalog import open_catalog
    from lssr_ray.data.cube import plan_data_stage, read_chips

    stage = plan_data_stage(read_aoi(aoi_path), open_catalog(catalog, asset_access="s3"))
    t0 = time.perf_counter()
    n = ok = 0
    for rec, _ in read_chips(stage.plan, stage.granules, block=block):
        n += 1
        ok += rec.skipped is None
    return {"chips": n, "chips_read": ok, "granules": len(stage.granules), "read_s": round(time.perf_counter() - t0, 2),
            "aoi_km2": round(stage.aoi.area_km2, 2)}


def run_hls_reads(*, aoi_km: float = 15.0, blocks=BLOCKS, log=print) -> dict[str, Any]:
    """The ``hls_reads`` section of ``bench/results.json``."""
    from lssr_ray.data import s3server
    from lssr_ray.data.aoi import write_box_aoi

    mk = make_hls_cogs_module()
    srv = s3server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="hls_reads_") as tmp:
            made = mk.make(Path(tmp) / "hls", tiles=(TILE,), s3_endpoint=srv.endpoint_url, log=log)
            g = made["granules"][0]
            granule_bytes = sum(p.stat().st_size for p in g["files"].values())
            tile_km2 = g["shape"][0] * g["shape"][1] * (30 * 30) / 1e6
            bounds, crs = aoi_box(TILE, aoi_km)
            aoi = write_box_aoi(Path(tmp) / "aoi.geojson", bounds, crs)
            rows = []
            with s3server.CountingProxy(srv.endpoint_url) as proxy:
                env = {**os.environ, **s3server.s3_env(proxy.endpoint_url)}
                for block in blocks:
                    proxy.reset()
                    code = ("import json,sys; sys.path.insert(0, sys.argv[4]); from bench.hls_reads import read_all; "
                            "print(json.dumps(read_all(sys.argv[1], sys.argv[2], int(sys.argv[3]))))")
                    t0 = time.perf_counter()
                    out = subprocess.run([sys.executable, "-c", code, str(made["catalog"]), aoi, str(block), str(REPO)],
                                         env=env, capture_output=True, text=True, check=False, timeout=1800)
                    if out.returncode != 0:
                        raise RuntimeError(f"block={block} child failed: {out.stderr[-2000:]}")
                    child = json.loads(out.stdout.strip().splitlines()[-1])
                    reqs = dict(proxy.requests)
                    total = sum(reqs.values())
                    out_km2 = child["chips_read"] * CORE_KM2
                    row = {"block": block, **child, "requests": reqs, "requests_total": total,
                           "requests_per_chip": round(total / max(child["chips"], 1), 2),
                           "get_per_chip": round(reqs.get("GET", 0) / max(child["chips"], 1), 2),
                           "bytes": proxy.body_bytes,
                           "bytes_per_output_km2": round(proxy.body_bytes / out_km2) if out_km2 else None,
                           "bytes_per_aoi_km2": round(proxy.body_bytes / child["aoi_km2"]),
                           "read_amplification": round(proxy.body_bytes / (granule_bytes / tile_km2 * out_km2), 2)
                           if out_km2 else None,
                           "wall_s": round(time.perf_counter() - t0, 1)}
                    log(f"block={block}: {row['chips']} chips, {total} requests ({row['requests_per_chip']}/chip), "
                        f"{row['bytes'] / 1e6:.1f} MB, {row['bytes_per_output_km2'] / 1e3:,.0f} kB/output km2, "
                        f"amplification {row['read_amplification']}, read {row['read_s']} s")
                    rows.append(row)
    finally:
        s3server.stop(srv)
    return {"tile": TILE, "granule_id": g["id"], "bands": sorted(g["files"]), "granule_bytes": granule_bytes,
            "granule_bytes_per_km2": round(granule_bytes / tile_km2), "aoi_km": aoi_km, "aoi_bounds": list(bounds),
            "crs": crs, "rows": rows}


def hls_reads_table(section: dict[str, Any]) -> str:
    """Markdown table of the ``hls_reads`` section."""
    out = [(f"Granule {section['granule_id']} ({', '.join(section['bands'])}; {section['granule_bytes'] / 1e6:.1f} MB, "
           f"{section['granule_bytes_per_km2'] / 1e3:,.1f} kB per km2 of tile), AOI {section['aoi_km']} km x "
           f"{section['aoi_km']} km, read from loopback S3 through a counting proxy."), "",
           ("| block (chips per edge) | chips | GET | HEAD | requests / chip | MB fetched | kB / output km2 "
           "| kB / AOI km2 | read amplification | read s |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        q = r["requests"]
        out.append(f"| {r['block']} | {r['chips']} | {q.get('GET', 0)} | {q.get('HEAD', 0)} | {r['requests_per_chip']} | "
                   f"{r['bytes'] / 1e6:.1f} | {r['bytes_per_output_km2'] / 1e3:,.1f} | {r['bytes_per_aoi_km2'] / 1e3:,.1f} | "
                   f"{r['read_amplification']} | {r['read_s']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aoi-km", type=float, default=15.0, help="edge of the square AOI inside the tile (km)")
    ap.add_argument("--blocks", default=",".join(map(str, BLOCKS)), help="comma-separated read-block edges")
    ap.add_argument("--out", help="merge the section into this results JSON (e.g. bench/results.json)")
    a = ap.parse_args(argv)
    section = run_hls_reads(aoi_km=a.aoi_km, blocks=tuple(int(b) for b in a.blocks.split(",")))
    print(hls_reads_table(section))
    if a.out:
        path = Path(a.out)
        results = json.loads(path.read_text()) if path.is_file() else {}
        results["hls_reads"] = section
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BLOCKS", "TILE", "aoi_box", "hls_reads_table", "read_all", "run_hls_reads"]
