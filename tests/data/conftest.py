"""Fixtures shared by the data tests."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest

from lssr_ray.data import worldcereal as wc
from lssr_ray.data.samples import sample_dir

FLANDERS = sample_dir("worldcereal_flanders_31UDS_2018")


def _raw_nc(path, var) -> np.ndarray:
    with netCDF4.Dataset(path) as nc:
        v = nc[var]
        v.set_auto_maskandscale(False)
        return np.asarray(v[:])


@pytest.fixture(scope="session")
def raw_nc():
    """``raw_nc(path, var)``: a NetCDF variable's stored values (no CF masking or scaling), read
    with netCDF4 directly, as the reference the project's readers are checked against."""
    return _raw_nc


@pytest.fixture(scope="module")
def flanders_patch():
    """The Flanders WorldCereal sample patch, opened once per test module."""
    return wc.open_patch(FLANDERS)
