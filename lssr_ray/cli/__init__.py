"""Command lines of the jobs (``lssr-map``, ``lssr-train``, ``lssr-evaluate``, ``lssr-train-classifier``).

Each module's ``main(argv)`` is the job; ``jobs/*.py`` (what ``ray job submit`` runs) call it.
Options come from the config dataclasses (:mod:`lssr_ray.cli.args`).
"""
