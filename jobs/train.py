"""``ray job submit -- python jobs/train.py --config ...`` runs this; the job is :mod:`lssr_ray.cli.train` (``lssr-train``)."""
from lssr_ray.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
