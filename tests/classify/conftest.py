"""Fixtures for the crop-type classifier tests: the real Flanders and Tanzania WorldCereal patches."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from lssr_ray.config import REPO_ROOT

FLANDERS_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"


def label_file(patch: Path) -> Path:
    return Path(min(glob.glob(str(patch / "OUTPUT_POLY-*_10m_*.nc"))))


@pytest.fixture(scope="session")
def flanders_dir() -> Path:
    return FLANDERS_DIR


@pytest.fixture(scope="session")
def flanders_s2():
    from lssr_ray.classify.features import load_patch_series

    return load_patch_series(FLANDERS_DIR, "s2")


@pytest.fixture(scope="session")
def flanders_nn():
    from lssr_ray.classify.features import load_patch_series

    return load_patch_series(FLANDERS_DIR, "nearest30")


@pytest.fixture(scope="session")
def flanders_labels(flanders_s2):
    from lssr_ray.classify.labels import load_labels

    return load_labels(label_file(FLANDERS_DIR), crs=flanders_s2.crs, transform=flanders_s2.transform,
                       shape=(64, 64))
