"""Import optional backends on demand, naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from lssr_ray.errors import MissingExtraError


def lazy_import(name: str, *, extra: str) -> ModuleType:
    """Import ``name`` or raise :class:`MissingExtraError` telling which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # the backend is optional; say how to get it
        raise MissingExtraError(
            f"{name!r} is not installed; install it with: pip install 'lssr-ray[{extra}]'"
        ) from exc
