"""Find HLS v2.0 granules over an AOI in a STAC API (NASA CMR-STAC ``LPCLOUD`` by default) and
write them as a static STAC catalog for ``lssr-map --catalog``.

    lssr-search-hls --aoi examples/iowa.geojson --start 2021-06-01 --end 2021-08-31 \\
        --max-cloud 40 --out out/iowa-hls/catalog.json

Both HLS collections (L30 and S30) by default; every result page is followed; ``--max-cloud``
filters ``eo:cloud_cover`` on the server (CMR-STAC's ``query`` extension) and again here.
Rate limits and server errors are retried with exponential backoff. ``--out`` is a folder, a
``.../catalog.json`` path or an ``s3://`` prefix; a rerun replaces the catalog it wrote before.
Searching needs no Earthdata login; reading the granules does (README "Using real HLS").
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from lssr_ray.cli.args import add_config_args, config_from_args, configure_logging
from lssr_ray.data.hls import CMR_STAC_URL
from lssr_ray.data.stac_search import DEFAULT_COLLECTIONS
from lssr_ray.errors import ConfigError, CoverageError, LssrError, one_line


@dataclass(frozen=True)
class SearchConfig:
    """One search (``lssr-search-hls``)."""

    aoi: str
    """AOI GeoJSON path (lon/lat polygons)."""
    start: str
    """First acquisition date, ISO (inclusive)."""
    end: str
    """Last acquisition date, ISO (inclusive)."""
    out: str
    """Catalog destination: a folder, a path ending in catalog.json, or an s3:// prefix."""
    max_cloud: float | None = None
    """Keep granules with eo:cloud_cover at most this percentage (0-100); default: no cloud filter."""
    stac_url: str = CMR_STAC_URL
    """STAC API root to search."""
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    """Comma-separated STAC collection ids."""
    page_size: int = 100
    """Items per result page (CMR-STAC allows up to 2000)."""
    max_retries: int = 5
    """Retries of a request answered 429/5xx or cut off, with exponential backoff."""
    backoff: float = 1.0
    """Backoff factor in seconds: waits of about backoff x 2^n between retries (Retry-After wins)."""
    timeout_s: float = 60.0
    """Seconds to wait for one HTTP response."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff < 0 or self.timeout_s <= 0:
            raise ConfigError(f"max_retries and backoff must be >= 0 and timeout_s > 0, got "
                              f"{self.max_retries}, {self.backoff}, {self.timeout_s}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, SearchConfig)
    p.add_argument("--debug", action="store_true", help="debug log messages")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.stac_search import run_search, write_catalog

    t0 = time.perf_counter()
    try:
        cfg = config_from_args(args, SearchConfig)
        aoi = read_aoi(cfg.aoi)
        res = run_search(aoi, cfg.start, cfg.end, stac_url=cfg.stac_url, collections=cfg.collections,
                         max_cloud=cfg.max_cloud, page_size=cfg.page_size, max_retries=cfg.max_retries,
                         backoff_factor=cfg.backoff, timeout=cfg.timeout_s)
        if not len(res.items):
            cloud = f" with eo:cloud_cover <= {cfg.max_cloud:g}" if cfg.max_cloud is not None else ""
            raise CoverageError(
                f"no items of {', '.join(cfg.collections)}{cloud} over {cfg.aoi} from {cfg.start} to {cfg.end} "
                f"at {cfg.stac_url}; widen the dates or the cloud limit (nothing was written)")
        href = write_catalog(res.items, cfg.out)
    except LssrError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"searched {cfg.stac_url}: {res.pages} page(s), {len(res.items)} item(s)")
    for cid in cfg.collections:
        print(f"  {cid}: {res.per_collection.get(cid, 0)}")
    if cfg.max_cloud is not None:
        before = "unknown" if res.matched_before_cloud is None else res.matched_before_cloud
        print(f"cloud filter eo:cloud_cover <= {cfg.max_cloud:g}: {before} matched without it, "
              f"{res.cloud_dropped} more dropped here")
    if res.outside_aoi:
        print(f"{res.outside_aoi} item(s) touched the AOI's hull but not the AOI: left out")
    print(f"catalog -> {href}   ({time.perf_counter() - t0:.1f} s)")
    return 0


__all__ = ["SearchConfig", "build_parser", "main"]
