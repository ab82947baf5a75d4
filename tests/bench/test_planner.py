"""The benchmark planner's arithmetic on hand-made numbers, and a smoke run of bench/run.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from lssr_ray.config import REPO_ROOT, GridConfig
from lssr_ray.errors import ConfigError

BENCH = REPO_ROOT / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


planner = _load("planner")


def test_core_edge_matches_the_grid_defaults():
    g = GridConfig()
    assert planner.CORE_KM == pytest.approx((g.chip_size - g.overlap) * 30 / 1000)


def test_chips_for_area_by_hand():
    # 1.68 km x 1.68 km = 2.8224 km2 per chip core
    assert planner.chips_for_area(2822.4) == 1000
    assert planner.chips_for_area(2822.4, dates=3) == 3000
    assert planner.chips_for_area(2822.4, edge_factor=1.01) == 1010
    assert planner.chips_for_area(2.9) == 2  # a partial chip is a whole chip
    with pytest.raises(ConfigError, match="area_km2"):
        planner.chips_for_area(0)


def test_plan_region_by_hand():
    r = planner.Rates(label="hand", s_per_chip=0.02, efficiency=0.5, post_s_per_chip=0.01, startup_s=30.0)
    p = planner.plan_region(2822.4, 4, r)
    # per chip 0.02 / 0.5 + 0.01 = 0.05 s; 1000 chips on 4 devices = 12.5 s; + 30 s start-up
    assert p.chips == 1000
    assert p.wall_s == pytest.approx(42.5)
    assert p.device_hours == pytest.approx(4 * 42.5 / 3600)
    assert p.km2_per_h == pytest.approx(2822.4 * 3600 / 42.5)
    assert p.measured is False
    two_dates = planner.plan_region(2822.4, 1, r, dates=2)
    assert two_dates.wall_s == pytest.approx(30 + 2000 * 0.05)
    # a device faster than its host: stage 1 runs at the host's pace (0.03 s > 0.02 / 0.5 is false,
    # 0.06 s > 0.04 s is true)
    slow_host = planner.Rates(label="h", s_per_chip=0.02, efficiency=0.5, host_s_per_chip=0.06)
    assert planner.plan_region(2822.4, 2, slow_host).wall_s == pytest.approx(1000 * 0.06 / 2)
    fast_host = planner.Rates(label="h", s_per_chip=0.02, efficiency=0.5, host_s_per_chip=0.03)
    assert planner.plan_region(2822.4, 2, fast_host).wall_s == pytest.approx(1000 * 0.04 / 2)


def test_gpu_estimate_by_hand():
    assert planner.gpu_seconds_per_chip(1.2e12, peak_tflops=1000, utilisation=0.4) == pytest.approx(3e-3)
    with pytest.raises(ConfigError, match="utilisation"):
        planner.gpu_seconds_per_chip(1.2e12, utilisation=1.5)


def test_bad_inputs_name_the_problem():
    r = planner.Rates(label="x", s_per_chip=1.0)
    with pytest.raises(ConfigError, match="n_devices"):
        planner.plan_region(100, 0, r)
    with pytest.raises(ConfigError, match="efficiency"):
        planner.Rates(label="x", s_per_chip=1.0, efficiency=1.5)
    with pytest.raises(ConfigError, match="s_per_chip"):
        planner.Rates(label="x", s_per_chip=0.0)


def test_rates_from_hand_made_results():
    results = {
        "machine": {"cpu_model": "test cpu", "cores": 2},
        "pipeline": {
            "engine_only": [{"threads": 2, "chips_per_s": 2.0}, {"threads": 1, "chips_per_s": 1.0}],
            "runs": [
                {"status": "measured", "actors": 1, "chips": 36, "chip_dates_ok": 100,
                 "ratio_to_engine_only_all_cores": 0.8, "stage1_s": 30.0, "stage2_s": 10.0, "run_wall_s": 50.0,
                 "per_chip_s": {"read_s": 0.3, "infer_s": 0.4, "commit_s": 0.1}},
                {"status": "measured", "actors": 1, "chips": 9, "chip_dates_ok": 9,
                 "ratio_to_engine_only_all_cores": 0.5, "stage1_s": 9.0, "stage2_s": 3.0, "run_wall_s": 30.0},
            ],
        },
        "engines": {
            "rows": [{"engine": "torch eager", "model": "sd21", "batch_size": 1, "status": "measured",
                      "s_per_chip": 20.0}],
            "flops_per_chip": {"sd21": {"total": 1.2e12}},
        },
    }
    cpu, sd21, gpu = planner.rates_from_results(results, utilisation=0.4, peak_tflops=1000)
    # the largest 1-actor run: efficiency 0.8, 10 s / 100 chips stage 2, 50 - 30 - 10 s start-up
    assert (cpu.s_per_chip, cpu.efficiency, cpu.post_s_per_chip, cpu.startup_s) == pytest.approx((0.5, 0.8, 0.1, 10.0))
    assert cpu.measured and sd21.measured
    assert sd21.s_per_chip == 20.0 and sd21.efficiency == pytest.approx(0.8)
    assert gpu.s_per_chip == pytest.approx(3e-3) and not gpu.measured and "ESTIMATE" in gpu.label
    assert gpu.post_s_per_chip == pytest.approx(0.1 * 2 / planner.GPU_HOST_CORES)
    assert gpu.host_s_per_chip == pytest.approx((0.3 + 0.1) * 2 / planner.GPU_HOST_CORES)
    assert cpu.host_s_per_chip == 0.0
    sec = planner.planner_section(results, area_km2=2822.4, edge_factor=1.0, devices=(1, 10))
    assert sec["chips"] == 1000 and len(sec["plans"]) == 6
    gpu10 = next(p for p in sec["plans"] if p["n_devices"] == 10 and not p["measured"])
    # default peak 989.4 TFLOP/s at 30 %: 4.0428 ms/chip / 0.9 = 4.49 ms < host 0.4 * 2 / 16 = 50 ms
    assert gpu10["wall_s"] == pytest.approx(10.0 + 1000 * (0.05 + 0.1 * 2 / 16) / 10)
    no_host = dict(results, pipeline={**results["pipeline"], "runs": [
        {k: v for k, v in results["pipeline"]["runs"][0].items() if k != "per_chip_s"}]})
    gpu_only = next(p for p in planner.planner_section(no_host, area_km2=2822.4, edge_factor=1.0, devices=(10,))["plans"]
                    if not p["measured"])
    assert gpu_only["wall_s"] == pytest.approx(10.0 + 1000 * (1.2e12 / 296.82e12 / 0.9 + 0.1 * 2 / 16) / 10)


def test_iowa_edge_factor_matches_the_chip_plan():
    from lssr_ray.data.aoi import read_aoi
    from lssr_ray.data.grid import plan_chips

    with pytest.warns(UserWarning, match="UTM zones"):
        aoi = read_aoi(REPO_ROOT / "examples" / "iowa.geojson")
    assert aoi.area_km2 == pytest.approx(planner.IOWA_KM2, abs=0.1)
    assert planner.chips_for_area(planner.IOWA_KM2, edge_factor=planner.IOWA_EDGE_FACTOR) == len(plan_chips(aoi))


def test_quick_engine_bench_writes_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--sections", "engines", "--threads", "1", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu_model"]
    eng = res["engines"]
    rows = {(r["engine"], r["model"], r["batch_size"]): r for r in eng["rows"]}
    for b in (1, 2):
        for name in ("torch eager", "onnxruntime", "bicubic (torch interpolate)", "bicubic (rasterio/GDAL cubic)"):
            r = rows[(name, "small" if not name.startswith("bicubic") else "none", b)]
            assert r["status"] == "measured" and r["s_per_chip"] > 0 and r["chips_per_s"] > 0
            assert r["s_per_chip"] * r["chips_per_s"] == pytest.approx(1.0)
        # the network does far more work per chip than a bicubic resample
        assert rows[("onnxruntime", "small", b)]["s_per_chip"] > rows[("bicubic (torch interpolate)", "none", b)]["s_per_chip"]
        trt = rows[("tensorrt", "small", b)]
        assert trt["status"] == "measured" or trt["status"].startswith("not available")
    assert eng["flops_per_chip"]["small"]["total"] > 1e9
    assert "engines" in res["runs"] and res["runs"]["engines"]["quick"] is True
    assert "engines" in proc.stdout and "onnxruntime" in proc.stdout
