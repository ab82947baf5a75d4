"""Load a ``jobs/*.py`` entry point as a module, so tests call its ``main(argv)`` in-process."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from lssr_ray.config import REPO_ROOT


def load_job(name: str) -> ModuleType:
    """A fresh module of ``jobs/<name>.py`` (its own module object each call, nothing cached)."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO_ROOT / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
