"""Metrics against a hand example, the LightGBM wrapper on real features, save/load, comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lssr_ray.classify.evaluate import (
    classification_scores,
    compare_sources,
    confusion_matrix,
    format_comparison,
)
from lssr_ray.classify.features import pixel_matrix, season_features
from lssr_ray.classify.model import CropClassifier
from lssr_ray.classify.split import spatial_split
from lssr_ray.errors import ConfigError, MissingDataError


def test_metrics_hand_example():
    yt = np.array([1200, 1200, 1200, 5100, 5100, 9120])
    yp = np.array([1200, 1200, 5100, 5100, 9120, 9120])
    cm = confusion_matrix(yt, yp, labels=[1200, 5100, 9120])
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    s = classification_scores(yt, yp)
    # by hand: maize P=1 R=2/3 F1=0.8; potatoes P=1/2 R=1/2 F1=0.5; grass P=1/2 R=1 F1=2/3
    assert s["per_class"]["1200"]["f1"] == pytest.approx(0.8)
    assert s["per_class"]["5100"]["f1"] == pytest.approx(0.5)
    assert s["per_class"]["9120"]["f1"] == pytest.approx(2 / 3)
    assert s["per_class"]["9120"]["name"] == "Permanent grass crops"
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s["overall_accuracy"] == pytest.approx(4 / 6)
    json.dumps(s)  # JSON-able


def test_nodata_prediction_counts_as_error():
    yt = np.array([1200, 1200, 9120, 9120])
    yp = np.array([1200, 0, 9120, 9120])
    s = classification_scores(yt, yp, labels=[1200, 9120])
    assert s["overall_accuracy"] == 0.75 and s["n_unclassified"] == 1
    assert s["per_class"]["1200"]["recall"] == 0.5 and s["per_class"]["1200"]["precision"] == 1.0
    with pytest.raises(ConfigError, match="nodata"):
        classification_scores(np.array([0, 1200]), np.array([1200, 1200]))


def test_class_weights_raise_rare_class_recall():
    rng = np.random.default_rng(0)
    y = np.where(rng.random(2000) < 0.05, 5100, 1200)
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    X[y == 5100, 0] += 1.0  # overlapping classes: the prior decides
    rec = {}
    for cw in ("balanced", None):
        clf = CropClassifier.fit(X, y, feature_names=["a", "b", "c"], class_weight=cw, num_boost_round=50)
        p = clf.predict(X)
        rec[cw] = ((p == 5100) & (y == 5100)).sum() / (y == 5100).sum()
    assert rec["balanced"] > 0.8 and rec[None] < 0.3
    with pytest.raises(ConfigError, match="class_weight"):
        CropClassifier.fit(X, y, feature_names=["a", "b", "c"], class_weight="inverse")


@pytest.fixture(scope="module")
def s2_features(flanders_s2):
    return season_features(flanders_s2.reflectance, flanders_s2.dates, season_start="2017-12")


def test_model_learns_real_signal_and_roundtrips(s2_features, flanders_labels, tmp_path):
    X, names = s2_features
    lab = flanders_labels.codes
    rng = np.random.default_rng(0)
    m = lab != 0
    half = m & (rng.random(lab.shape) < 0.5)  # random pixels: an easy, non-spatial check
    clf = CropClassifier.fit(pixel_matrix(X, half), lab[half], feature_names=names, num_boost_round=60)
    other = m & ~half
    acc = (clf.predict(pixel_matrix(X, other)) == lab[other]).mean()
    assert acc > 0.9, acc
    assert clf.table.codes == (1200, 2130, 5100, 7900, 9120) and clf.table.name(5100) == "Potatoes"
    d = clf.save(tmp_path / "model")
    assert json.loads((d / "features.json").read_text()) == names
    assert json.loads((d / "classes.json").read_text())["nodata"] == 0
    clf2 = CropClassifier.load(d)
    np.testing.assert_allclose(clf2.predict_proba(pixel_matrix(X, other)),
                               clf.predict_proba(pixel_matrix(X, other)), rtol=1e-6)
    # no valid input -> nodata 0; the rest classified
    Xn = X.copy()
    Xn[:, :5, :] = np.nan
    ct = clf2.predict_map(Xn)
    assert ct.dtype == np.uint16 and (ct[:5] == 0).all() and (ct[5:] != 0).all()
    (d / "features.json").unlink()
    with pytest.raises(MissingDataError, match="features.json"):
        CropClassifier.load(d)


def test_compare_sources_same_split(s2_features, flanders_labels):
    X, names = s2_features
    lab = flanders_labels.codes
    split = spatial_split(lab, 0.3, seed=0)
    noisy = X + np.random.default_rng(0).normal(0, 0.2, X.shape).astype(np.float32)
    res = compare_sources({"s2": (X, names), "noisy": (noisy, names)}, lab, split, num_boost_round=40)
    assert set(res) == {"s2", "noisy"}
    n_test = int(split.test.sum())
    for r in res.values():
        assert r["n_pixels"] == n_test and r["labels"] == [1200, 2130, 5100, 7900, 9120]
        assert r["per_class"]["2130"]["support"] == 0  # train-only class: listed, not in macro F1
        assert np.sum(r["confusion"]) == n_test - r["n_unclassified"]
    table = format_comparison(res, split_summary=split.summary())
    assert "| s2 |" in table and "macro F1" in table and "F1 Maize (1200)" in table
    assert "[2130, 5100]" in table  # train-only classes are stated


@pytest.mark.slow
def test_compare_sources_on_ray_matches_local(s2_features, flanders_labels):
    ray = pytest.importorskip("ray")
    X, names = s2_features
    lab = flanders_labels.codes
    split = spatial_split(lab, 0.3, seed=1)
    sets = {"a": (X, names), "b": (X[::-1].copy(), names[::-1])}
    local = compare_sources(sets, lab, split, num_boost_round=20)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = compare_sources(sets, lab, split, num_boost_round=20, executor="ray")
    finally:
        ray.shutdown()
    for s in sets:  # deterministic LightGBM: identical scores in Ray tasks
        assert remote[s]["confusion"] == local[s]["confusion"]
        assert remote[s]["macro_f1"] == pytest.approx(local[s]["macro_f1"])
