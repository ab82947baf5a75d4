"""``python jobs/train_classifier.py ...`` runs this; the job is :mod:`lssr_ray.cli.train_classifier` (``lssr-train-classifier``)."""
from lssr_ray.cli.train_classifier import main

if __name__ == "__main__":
    raise SystemExit(main())
