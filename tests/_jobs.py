"""Load a ``jobs/*.py`` entry point or a ``bench/*.py`` script as a module, so tests call its
functions and ``main(argv)`` in-process."""

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


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as module ``bench_<name>``, registered in ``sys.modules`` (its
    dataclasses and pickling need that); one module object per name."""
    import sys

    key = f"bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
