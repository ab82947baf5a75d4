"""Spatially separated split: no field (connected same-code region) on both sides."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as sk_label

from lssr_ray.classify.split import field_components, spatial_split
from lssr_ray.errors import ConfigError


def _assert_no_field_straddles(labels, split, connectivity):
    # independent component labelling (scikit-image) per class
    for code in np.unique(labels):
        if code == 0:
            continue
        comp = sk_label(labels == code, connectivity=1 if connectivity == 4 else 2)
        for cid in range(1, comp.max() + 1):
            m = comp == cid
            on_train, on_test = split.train[m].any(), split.test[m].any()
            assert not (on_train and on_test), f"field {cid} of class {code} is on both sides"
            assert on_train or on_test  # every labelled pixel is used


def test_real_flanders_split(flanders_labels):
    labels = flanders_labels.codes
    s = spatial_split(labels, 0.3, seed=0)
    _assert_no_field_straddles(labels, s, 8)
    assert not (s.train & s.test).any()
    assert ((s.train | s.test) == (labels != 0)).all()
    # 2130 and 5100 are single fields in this patch (8-connected): train only, reported
    assert s.train_only == (2130, 5100)
    pc = s.fields_per_class
    assert pc[9120]["train_fields"] + pc[9120]["test_fields"] == 8
    assert pc[1200]["train_fields"] + pc[1200]["test_fields"] == 3
    assert all(v["test_fields"] >= 1 for c, v in pc.items() if c not in s.train_only)
    assert sum(v["test_pixels"] for v in pc.values()) == s.test.sum()
    summary = s.summary()
    assert summary["test_pixels"] == int(s.test.sum()) > 0


def test_deterministic_by_seed(flanders_labels):
    labels = flanders_labels.codes
    a, b = spatial_split(labels, seed=3), spatial_split(labels, seed=3)
    np.testing.assert_array_equal(a.test, b.test)
    tests = {spatial_split(labels, seed=s).test.tobytes() for s in range(6)}
    assert len(tests) > 1  # the seed matters


def test_many_fields_meet_fraction_and_4_connectivity():
    rng = np.random.default_rng(1)
    # 16x16 grid of 4x4 fields with random codes from 3 classes, some unlabelled
    codes = rng.choice([0, 1100, 1200, 9120], size=(16, 16), p=[0.1, 0.3, 0.3, 0.3])
    labels = codes.repeat(4, 0).repeat(4, 1).astype(np.uint16)
    for conn in (4, 8):
        s = spatial_split(labels, 0.25, seed=0, connectivity=conn)
        _assert_no_field_straddles(labels, s, conn)
        frac = s.test.sum() / (labels != 0).sum()
        assert 0.15 < frac < 0.35, frac
    # 4-connectivity splits diagonal touches into separate fields: at least as many fields
    assert field_components(labels, connectivity=4).max() >= field_components(labels, connectivity=8).max()


def test_bad_input():
    with pytest.raises(ConfigError, match="test_fraction"):
        spatial_split(np.ones((4, 4), np.uint16), 1.5)
    with pytest.raises(ConfigError, match="integer"):
        spatial_split(np.ones((4, 4), np.float32))
    with pytest.raises(ConfigError, match="connectivity"):
        spatial_split(np.ones((4, 4), np.uint16), connectivity=6)
