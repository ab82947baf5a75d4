"""Quicklooks show where there is data: the window is cropped to whole 30 m cells holding data."""

from __future__ import annotations

import numpy as np

from lssr_ray.mapping.quicklook import _data_box


def test_data_box_is_the_whole_cell_box_of_finite_pixels():
    k = 3
    rgb10 = np.full((3, 30, 36), np.nan, np.float32)
    rgb10[1, 7, 10] = 0.1  # cell (2, 3)
    rgb10[0, 20, 31] = 0.2  # cell (6, 10)
    assert _data_box(rgb10, k) == (2, 7, 3, 11)
    box = _data_box(rgb10, k)
    crop = rgb10[:, box[0] * k:box[1] * k, box[2] * k:box[3] * k]
    assert np.isfinite(crop).sum() == np.isfinite(rgb10).sum()  # nothing with data is cut away


def test_data_box_keeps_the_window_without_data():
    assert _data_box(np.full((3, 12, 9), np.nan, np.float32), 3) == (0, 4, 0, 3)


def test_quicklook_window_is_bounded_and_centred_on_a_state_size_grid():
    """The quicklook reads at most ``max_px`` x ``max_px`` output pixels whatever the region:
    an Iowa-size grid (35,280 x 53,424 px at 10 m) gets a centred 1,536 px window."""
    from affine import Affine

    from lssr_ray.data.grid import OutputGrid
    from lssr_ray.mapping.quicklook import _window

    grid = OutputGrid(crs="EPSG:32615", input_transform=Affine(30, 0, 200000, 0, -30, 4800000),
                      input_shape=(11760, 17808))
    assert grid.output_shape == (35280, 53424)
    row, col, h, w = _window(grid, 1536)
    assert (h * grid.scale, w * grid.scale) == (1536, 1536)
    assert (row, col) == ((11760 - 512) // 2, (17808 - 512) // 2)
    small = OutputGrid(crs="EPSG:32615", input_transform=Affine(30, 0, 0, 0, -30, 0), input_shape=(100, 40))
    assert _window(small, 1536) == (0, 0, 100, 40)  # a small region: all of it


def test_windowed_open_reads_the_store_values_without_dask(tmp_path):
    """The quicklooks' store reader decodes exactly as ``open_store`` and holds no dask graph."""
    from lssr_ray.mapping import store as S
    from lssr_ray.mapping.views import open_windowed, read_window

    url = str(tmp_path / "q.zarr")
    S.create_store(url, crs="EPSG:32616", transform=(10, 0, 500000, 0, -10, 3700000), shape=(40, 50), chunk=16,
                   times=["2020-07-01"])
    rng = np.random.default_rng(3)
    S.write_chunk(url, rng.uniform(-0.005, 1.3, (6, 16, 16)).astype(np.float32), row_off=16, col_off=32)
    lazy = open_windowed(url)
    assert lazy.reflectance.chunks is None and lazy.rio.crs.to_epsg() == 32616
    win = read_window(lazy.reflectance, time=0, band=[0, 1, 2], y=slice(10, 30), x=slice(30, 50))
    want = S.open_store(url).reflectance.isel(time=0, band=[0, 1, 2], y=slice(10, 30), x=slice(30, 50)).values
    assert win.dtype == np.float32 and np.isfinite(want).any()
    np.testing.assert_array_equal(win.values, want)
