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
