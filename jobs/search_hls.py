"""``python jobs/search_hls.py ...`` (or ``ray job submit -- python jobs/search_hls.py ...``) runs :mod:`lssr_ray.cli.search_hls` (``lssr-search-hls``)."""
from lssr_ray.cli.search_hls import main

if __name__ == "__main__":
    raise SystemExit(main())
