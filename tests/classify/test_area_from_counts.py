"""The area table reduced from per-chunk class counts equals the one of the whole map."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin

from lssr_ray.classify.maps import (
    area_table,
    class_counts,
    write_area_csv,
    write_area_csv_from_counts,
)
from lssr_ray.errors import ConfigError


def test_csv_from_summed_chunk_counts_equals_the_whole_map_csv(tmp_path):
    rng = np.random.default_rng(3)
    ct = rng.choice(np.array([0, 1200, 2130, 4242, 9120], np.uint16), size=(250, 310), p=[0.3, 0.3, 0.2, 0.05, 0.15])
    ct[:, 300:] = 0
    t = from_origin(500000, 5600000, 10, 10)
    total: dict[int, int] = {}
    for r in range(0, 250, 64):  # chunk by chunk, edge chunks cut by the grid
        for c in range(0, 310, 64):
            for code, n in class_counts(ct[r:r + 64, c:c + 64]).items():
                total[code] = total.get(code, 0) + n
    whole = write_area_csv(tmp_path / "whole.csv", ct, t, crs="EPSG:32631")
    summed = write_area_csv_from_counts(tmp_path / "summed.csv", total, t, crs="EPSG:32631")
    assert summed.read_bytes() == whole.read_bytes()
    # codes with no pixel (a class of the table nobody got) are not rows
    rows = area_table({**total, 5100: 0}, t)
    assert [r["code"] for r in rows] == [1200, 2130, 4242, 9120, 0]
    assert rows[-1]["pixels"] == int((ct == 0).sum()) and rows[-1]["fraction"] == pytest.approx((ct == 0).mean())


def test_class_counts_need_a_2d_map():
    with pytest.raises(ConfigError, match="2-D"):
        class_counts(np.zeros((2, 3, 4), np.uint16))
