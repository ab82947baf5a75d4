"""Clear-sky masks decoded from real pixel_qa, BQA and SCL values of the samples."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from lssr_ray.data import hls, masks
from lssr_ray.data.samples import sample_dir
from lssr_ray.data.worldcereal import open_nc, open_patch
from lssr_ray.errors import ConfigError

FLANDERS = sample_dir("worldcereal_flanders_31UDS_2018")


@pytest.fixture(scope="module")
def l8_qa():
    raw = open_nc(open_patch(FLANDERS).files["l8"], mask_and_scale=False)
    days = np.datetime_as_string(raw["timestamp"].values, unit="D")
    return days, raw["pixel_qa"].values


def test_pixel_qa_known_codes():
    # codes that occur in the Flanders L8 file, decoded by hand from the C1 SR bit table
    codes = np.array([322, 386, 328, 352, 480, 992, 834, 0], dtype=np.uint16)
    d = masks.decode_pixel_qa(codes)
    assert d["clear"].tolist() == [True, True, False, False, False, False, True, False]
    assert d["shadow"].tolist() == [False, False, True, False, False, False, False, False]
    assert d["cloud"].tolist() == [False, False, False, True, True, True, False, False]
    assert d["cloud_conf"].tolist() == [1, 2, 1, 1, 3, 3, 1, 0]
    assert d["cirrus_conf"].tolist() == [1, 1, 1, 1, 1, 3, 3, 0]
    assert d["fill"].tolist() == [False] * 7 + [True]
    assert masks.clear_from_pixel_qa(codes).tolist() == [True, True, False, False, False, False, False, False]
    assert masks.clear_from_pixel_qa(codes, mask_cirrus=False)[6]


def test_pixel_qa_real_dates(l8_qa):
    days, qa = l8_qa
    frac = {d: masks.clear_from_pixel_qa(qa[i]).mean() for i, d in enumerate(days)}
    assert frac["2018-08-02"] == 1.0  # PROVENANCE: pixel_qa all 322
    assert frac["2018-08-18"] == 0.0  # PROVENANCE: 480 = cloud
    assert frac["2017-08-31"] == pytest.approx(2721 / 4096)  # 322 x 2721, clouds elsewhere
    assert frac["2018-10-21"] == 1.0  # 322 and 386 (clear, medium cloud confidence)
    assert frac["2018-06-15"] == 0.0  # cirrus high or cloud everywhere


def test_scl_real_clear_fraction_matches_provenance():
    patch = open_patch(FLANDERS)
    raw = open_nc(patch.files["s2_20m"], mask_and_scale=False)
    days = list(np.datetime_as_string(raw["timestamp"].values, unit="D"))
    scl = raw["SCL"].values[days.index("2018-08-02")]
    # PROVENANCE: fraction of SCL 4 or 5 on 2018-08-02 is 0.99
    assert round(float(masks.clear_from_scl(scl, clear_classes=(4, 5)).mean()), 2) == 0.99
    default = masks.clear_from_scl(scl)
    assert not default[np.isin(scl, masks.SCL_CLOUD + masks.SCL_NODATA)].any()
    cloudy = raw["SCL"].values[days.index("2018-06-13")]  # SCL 8/9 clouds over part of the patch
    assert 0.2 < masks.clear_from_scl(cloudy).mean() < 0.5
    with pytest.raises(ConfigError, match="choose from"):
        masks.clear_from_scl(scl, clear_classes=(4, 9))


def test_bqa_precollection_real_values():
    with rasterio.open(sample_dir("landsat8_l1t_alabama_2015") / "l8_BQA.tif") as src:
        bqa = src.read(1)
    d = masks.decode_bqa_precollection(np.array([20480, 53248, 61440, 36864, 23552, 28672, 20512, 1], np.uint16))
    assert d["cloud"].tolist() == [1, 3, 3, 2, 1, 1, 1, 0]
    assert d["cirrus"].tolist() == [1, 1, 3, 1, 1, 3, 1, 0]
    assert d["snow"].tolist() == [0, 0, 0, 0, 3, 0, 0, 0]
    assert d["water"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0]
    clear = masks.clear_from_bqa_precollection(bqa)
    # hand count from the value histogram: cloud 'yes' codes 53248, 53280, 61440, 61472 and snow 23552
    values, counts = np.unique(bqa, return_counts=True)
    hist = dict(zip(values.tolist(), counts.tolist()))
    not_clear = sum(hist.get(v, 0) for v in (53248, 53280, 61440, 61472, 23552))
    assert int((~clear).sum()) == not_clear
    assert (~masks.clear_from_bqa_precollection(bqa, min_conf=2)).sum() > not_clear
    with pytest.raises(ConfigError, match="min_conf"):
        masks.clear_from_bqa_precollection(bqa, min_conf=4)


def test_fmask_clear_and_dispatch():
    f = hls.encode_fmask(cirrus=np.array([1, 0, 0, 0, 0, 0], bool), cloud=np.array([0, 1, 0, 0, 0, 0], bool),
                         adjacent=np.array([0, 0, 1, 0, 0, 0], bool), shadow=np.array([0, 0, 0, 1, 0, 0], bool),
                         water=np.array([0, 0, 0, 0, 1, 0], bool), aerosol=3)
    assert masks.clear_from_fmask(f).tolist() == [True, False, False, False, True, True]
    assert masks.clear_from_fmask(f, mask_cirrus=True, mask_water=True).tolist() == [False, False, False, False, False, True]
    assert masks.clear_from_fmask(np.array([255], np.uint8)).tolist() == [False]
    assert masks.clear_mask(f, "fmask", mask_adjacent=False)[2]
    with pytest.raises(ConfigError, match="valid"):
        masks.clear_mask(f, "qa_pixel")
