"""``python jobs/evaluate.py ...`` runs this; the job is :mod:`lssr_ray.cli.evaluate` (``lssr-evaluate``)."""
from lssr_ray.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
