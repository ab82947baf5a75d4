"""bench/gpu_check.py: its CPU-checkable parts (no GPU here; the GPU run is bench/gpu_check.sh)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from lssr_ray.config import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu_check.sh"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", REPO_ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_results_file_is_written_per_section_and_failures_are_named(tmp_path):
    gc = _gpu_check()
    res = gc.Results(tmp_path / "r.json", {"ran_on_gpu": False})
    res.section("a", lambda: {"x": 1})
    res.section("b", lambda: 1 / 0)
    res.section("c", lambda: {"status": "skipped: asked"})
    res.section("d", lambda: {"status": "parity failed: 0.2 >= 0.05"})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["a"]["x"] == 1 and data["a"]["status"] == "ok"
    assert data["b"]["status"].startswith("failed: ZeroDivisionError") and "traceback" in data["b"]
    assert res.failed() == ["b", "d"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the real check runs")
def test_without_a_gpu_the_real_check_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([str(SCRIPT), "--out", str(out)], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--dry-run" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_dry_run_goes_through_every_section_on_cpu(tmp_path):
    """The same code as on a GPU host (model, external-data export, graph engine parity, per-tile
    timings) with the small base and onnxruntime; ~3 min on 2 busy cores."""
    out = tmp_path / "gpu.json"
    r = subprocess.run([str(SCRIPT), "--dry-run", "--train-steps", "0", "--repeats", "1", "--out", str(out)],
                       check=False, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["ran_on_gpu"] is False and d["dry_run"] is True
    assert set(d["export"]["files"]) == {"model.onnx", "model.onnx.data"}
    assert d["export"]["files"]["model.onnx.data"] > d["export"]["files"]["model.onnx"]
    eng = d["graph_engine"]
    assert eng["engine"] == "onnxruntime" and eng["max_abs_diff_vs_torch_fp32"] < eng["tolerance"]
    times = d["timing"]["s_per_tile"]
    assert set(times) == {"torch_fp32", "torch_auto", "onnxruntime"}
    assert all([row["batch"] for row in rows] == [1, 2] and all(row["s_per_tile"] > 0 for row in rows)
               for rows in times.values())
    assert d["training"]["status"].startswith("skipped")
