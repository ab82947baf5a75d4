"""``ray job submit -- python jobs/map_region.py ...`` runs this; the job is :mod:`lssr_ray.cli.map_region` (``lssr-map``)."""
from lssr_ray.cli.map_region import main

if __name__ == "__main__":
    raise SystemExit(main())
