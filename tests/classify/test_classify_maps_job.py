"""Area statistics, the legend map PNG, and the train_classifier job end to end."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from affine import Affine
from rasterio.transform import from_origin

from lssr_ray.classify.maps import area_statistics, plot_crop_map, write_area_csv
from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import ConfigError

FLANDERS_DIR = REPO_ROOT / "data" / "samples" / "worldcereal_flanders_31UDS_2018"


def _ct():
    ct = np.zeros((30, 40), np.uint16)
    ct[10:, :20] = 1200
    ct[10:, 20:] = 9120
    ct[25:, 35:] = 4242  # unknown code: shown as "code 4242"
    return ct


def test_area_statistics_hectares():
    ct = _ct()
    rows = area_statistics(ct, from_origin(500000, 5600000, 10, 10), crs="EPSG:32631")
    by = {r["code"]: r for r in rows}
    n = {c: int((ct == c).sum()) for c in (0, 1200, 9120, 4242)}
    assert by[1200]["area_ha"] == pytest.approx(n[1200] * 100 / 1e4)
    assert by[4242]["name"] == "code 4242" and by[1200]["name"] == "Maize"
    assert by[0]["name"] == "nodata" and by[0]["pixels"] == n[0]
    assert sum(r["fraction"] for r in rows if r["code"]) == pytest.approx(1.0)
    # non-square, rotated-free 20 m x 30 m pixels: 600 m² each
    rows2 = area_statistics(ct, Affine(20, 0, 0, 0, -30, 0))
    assert {r["code"]: r for r in rows2}[9120]["area_ha"] == pytest.approx(n[9120] * 600 / 1e4)
    with pytest.raises(ConfigError, match="projected"):
        area_statistics(ct, from_origin(3.0, 50.0, 1e-4, 1e-4), crs="EPSG:4326")


def test_area_csv_and_png(tmp_path):
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    ct = _ct()
    t = from_origin(500000, 5600000, 10, 10)
    p = write_area_csv(tmp_path / "a.csv", ct, t)
    rows = list(csv.DictReader(p.open()))
    assert [r["code"] for r in rows] == ["1200", "4242", "9120", "0"]
    assert float(rows[0]["area_ha"]) == pytest.approx((ct == 1200).sum() * 0.01)
    png = plot_crop_map(tmp_path / "m.png", ct, transform=t, title="test")
    img = mpimg.imread(png)[..., :3]
    cmap = plt.get_cmap("tab20")

    def share(rgb):
        return (np.abs(img - np.asarray(rgb)[:3]).max(axis=-1) < 0.02).mean()

    # classes in ascending code order take tab20 colours 0, 1, 2; nodata shows the grey background
    assert share(cmap(0)) > 0.05 and share(cmap(2)) > 0.05 and share(cmap(1)) > 0.001
    assert share((0.85, 0.85, 0.85)) > 0.03


def _job():
    spec = importlib.util.spec_from_file_location("train_classifier", REPO_ROOT / "jobs" / "train_classifier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_job_compare_writes_table_models_and_json(tmp_path, capsys):
    job = _job()
    rc = job.main(["--patch", str(FLANDERS_DIR), "--compare", "--out", str(tmp_path), "--rounds", "30",
                   "--lssr-checkpoint", "none"])  # the lssr source is tested in test_lssr_source.py
    assert rc == 0
    out = capsys.readouterr().out
    assert "| s2 |" in out and "| nearest30 |" in out and "| bicubic |" in out
    rep = json.loads((tmp_path / "metrics.json").read_text())
    res = rep["results"]
    assert set(res) == {"s2", "nearest30", "bicubic"}
    n_test = rep["split"]["test_pixels"]
    assert all(r["n_pixels"] == n_test for r in res.values())  # same split for every source
    assert rep["season_start"] == "2017-12" and rep["unknown_codes"] == {}
    for s in res:
        assert (tmp_path / s / "model" / "model.txt").is_file()
        assert (tmp_path / s / "crop_type.png").is_file()
        rows = list(csv.DictReader((tmp_path / s / "area_ha.csv").open()))
        assert sum(float(r["area_ha"]) for r in rows) == pytest.approx(64 * 64 * 0.01)  # 40.96 ha patch


def test_job_lssr_without_model_names_sources(tmp_path, capsys):
    rc = _job().main(["--patch", str(FLANDERS_DIR), "--source", "lssr", "--out", str(tmp_path),
                      "--lssr-checkpoint", "none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lssr" in err and "'s2', 'nearest30', 'bicubic'" in err
