"""Fixtures for the model tests: the committed small SD base and real Flanders chips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _deterministic():
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def base():
    """A fresh copy of the small stand-in base (LSSRModel injects LoRA into its UNet in place)."""
    from lssr_ray.config import SMALL_BASE_DIR
    from lssr_ray.model.base import load_base

    return load_base(SMALL_BASE_DIR)


@pytest.fixture(scope="session")
def real_batch():
    """(batch dict, hr target): two 16x16 (30 m) -> 48x48 (10 m) chips of real Flanders data."""
    from _chips import flanders_batch

    return flanders_batch()
