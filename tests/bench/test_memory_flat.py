"""The flat-memory benchmark's machinery: region AOIs that plan exactly n x n chips, the role of
each Ray process, the flatness verdict on given numbers, and (slow) one real run of the job."""

from __future__ import annotations

import json

import pytest

from lssr_ray.errors import ConfigError
from tests._jobs import load_bench

flat = load_bench("memory_flat")
memory = load_bench("memory")


def test_regions_plan_exactly_n_by_n_chips_centred_in_the_tile(tmp_path):
    import shapely
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from lssr_ray.data import hls
    from lssr_ray.data.aoi import read_aoi

    regions = [flat.region_aoi(tmp_path / f"s{s}.geojson", "15TVG", s) for s in (2, 4, 8)]
    assert [r["chips"] for r in regions] == [4, 16, 64]
    chunk = 56 * 3  # a chip core is one 168 x 168 px output chunk
    assert [r["output_px_per_date"] for r in regions] == [s * s * chunk * chunk for s in (2, 4, 8)]
    assert regions[2]["aoi_km2"] == pytest.approx(16 * regions[0]["aoi_km2"], rel=0.05)
    epsg, transform, shape = hls.tile_grid("15TVG")
    tile = GeoBox(shape, Affine(*transform), f"EPSG:{epsg}").extent.to_crs("EPSG:4326").geom
    geoms = [read_aoi(r["aoi"]).geometry for r in regions]
    assert all(tile.contains(g) for g in geoms)
    assert geoms[2].contains(geoms[1]) and geoms[1].contains(geoms[0])  # nested, one centre
    assert shapely.centroid(geoms[0]).distance(shapely.centroid(geoms[2])) < 1e-3


def test_region_too_large_for_the_tile_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not fit inside tile 15TVG"):
        flat.region_aoi(tmp_path / "big.geojson", "15TVG", 64)


def test_ray_data_workers_get_their_udf_as_role():
    from ray.data._internal.execution.operators.actor_pool_map_operator import (
        get_map_worker_cls_name,
    )

    def title(op: str, method: str = ".submit") -> str:  # a Ray worker's process title
        return f"ray::{get_map_worker_cls_name(op)}{method}"

    assert memory.role_of(title("MapBatches(LSSRPredictor)")) == "lssr_actor"
    assert memory.role_of(title("MapBatches(ReadChips)")) == "read_actor"
    assert memory.role_of(title("MapBatches(BlendAndWrite)"), is_root=True) == "driver"
    # a UDF no ROLES entry names gets a role of its own; a fused operator is named by its last UDF
    assert memory.role_of(title("MapBatches(ClassifyChunks)")) == "classify_chunks_actor"
    assert memory.role_of(title("ReadItems->MapBatches(CountClasses)", "")) == "count_classes_actor"
    assert memory.role_of("ray::MapBatches(write_overview)") == "write_overview_task"
    assert memory.role_of("ray::IDLE") == "ray_worker_other"
    assert memory.role_of("/venv/lib/ray/core/src/ray/gcs/gcs_server --port=1") == "ray_system"


def _run(chips: int, peaks: dict[str, float]) -> dict:
    return {"status": "measured", "side": int(chips ** 0.5), "chips": chips, "output_px_per_date": chips * 168 * 168,
            "process_wall_s": chips / 4, "peak_rss_mb": peaks, "driver_peak": {}}


def test_flatness_per_role_on_given_numbers():
    runs = [_run(64, {"driver": 500.0, "lssr_actor": 1000.0, "read_actor": 800.0, "ray_system": 300.0}),
            _run(256, {"driver": 540.0, "lssr_actor": 1010.0, "read_actor": 800.0, "ray_system": 600.0,
                       "classify_chunks_actor": 400.0}),
            _run(1024, {"driver": 560.0, "lssr_actor": 1100.0, "read_actor": 700.0, "ray_system": 900.0,
                        "classify_chunks_actor": 410.0})]
    r = flat.ratios(runs)
    assert r["by_role"]["driver"] == {"4x": 1.08, "16x": 1.12}
    assert r["by_role"]["lssr_actor"] == {"4x": 1.01, "16x": 1.1}
    assert r["not_flat"] == ["driver"] and r["flat"] is False  # 1.12 > 1.10; exactly 1.10 is flat
    assert "ray_system" not in r["judged"]  # Ray's own processes are listed, not judged
    assert r["unrated"] == ["classify_chunks_actor"]  # absent at 1x: no ratio
    runs[2]["peak_rss_mb"]["driver"] = 550.0
    assert flat.ratios(runs)["flat"] is True
    runs[1]["status"] = "failed (exit 1): boom"
    assert flat.ratios(runs)["by_role"]["driver"] == {"16x": 1.1}
    assert flat.ratios(runs[:1])["flat"] is None
    for r, own in zip(runs, (200.0, 205.0, 330.0), strict=True):  # RSS minus shared pages: judged on its own
        r["peak_private_mb"] = {"driver": own}
    priv = flat.ratios(runs, key="peak_private_mb")
    assert priv["by_role"]["driver"] == {"16x": 1.65} and priv["not_flat"] == ["driver"]


def test_table_and_markdown_render_every_role_and_flag_growth():
    runs = [_run(64, {"driver": 500.0, "lssr_actor": 1000.0}), _run(256, {"driver": 700.0, "lssr_actor": 1000.0}),
            _run(1024, {"driver": 900.0, "lssr_actor": 1020.0, "classify_chunks_actor": 300.0})]
    for r, finalize in zip(runs, (600.0, 750.0, 900.0), strict=True):
        r["driver_peak_by_phase"] = {"stage1": 450.0, "finalize": finalize}
    sec = {"tile": "15TVG", "n": 8, "dates": 1, "classifier": "models/croptype-lgbm", "runs": runs,
           "ratios": flat.ratios(runs)}
    text = flat.table(sec)
    assert "NOT flat: driver" in text and "16x 1.80" in text and "classify_chunks_actor" in text
    md = flat.markdown(sec)
    assert "| peak RSS MiB driver | 500 | 700 | 900 | **1.40** | **1.80** |" in md
    assert "| peak RSS MiB lssr_actor | 1000 | 1000 | 1020 | 1.00 | 1.02 |" in md
    assert "| peak RSS MiB classify_chunks_actor | - | - | 300 |  |  |" in md
    assert "| driver peak MiB in finalize | 600 | 750 | 900 | 1.25 | 1.50 |" in md
    assert "| driver peak MiB in stage1 | 450 | 450 | 450 | 1.00 | 1.00 |" in md and "in stage2" not in md


def test_peak_context_names_the_log_line_before_the_driver_peak():
    trace = [(1.0, 300.0), (5.0, 700.0), (9.0, 400.0)]
    lines = [(0.5, "planning"), (4.0, "stage 2: 4 chunks written"), (6.0, "crop_type ...")]
    assert flat.peak_context(trace, lines) == {"t_s": 5.0, "rss_mb": 700.0, "last_log_line": "stage 2: 4 chunks written"}


@pytest.mark.slow
def test_small_real_benchmark_runs_the_whole_job_three_times(tmp_path):
    """n = 1: 1, 4 and 16 chips through jobs/map_region.py (several minutes on 2 shared cores)."""
    results = tmp_path / "results.json"
    assert flat.main(["--n", "1", "--work", str(tmp_path / "w"), "--results", str(results)]) == 0
    sec = json.loads(results.read_text())["memory_flat"]
    assert [r["status"] for r in sec["runs"]] == ["measured"] * 3
    assert [r["chips"] for r in sec["runs"]] == [1, 4, 16]
    for r in sec["runs"]:
        assert r["ok"] + sum(r["skipped"].values()) == r["chips"] and r["crop_type_px"] > 0
        assert {"driver", "read_actor", "lssr_actor", "commit_actor", "blend_actor"} <= set(r["peak_rss_mb"])
        assert r["peak_rss_mb"]["driver"] > 100 and r["driver_peak"]["rss_mb"] == r["peak_rss_mb"]["driver"]
    assert set(sec["ratios"]["by_role"]["driver"]) == {"4x", "16x"}
    assert "| peak RSS MiB driver |" in flat.markdown(sec)


def test_driver_peak_per_phase_follows_the_jobs_log_markers():
    trace = [(1.0, 300.0), (3.0, 350.0), (6.0, 500.0), (8.0, 450.0), (12.0, 900.0), (14.0, 400.0)]
    lines = [(2.0, "stage 1 actor pools: read 1-1 x (0.5 CPU)"), (7.0, "stage 1: 64 chip-date(s) committed in 5 s"),
             (10.0, "stage 2: 64 of 64 chunk(s) written in 3 s"), (11.0, "WARNING: classifier applied ...")]
    assert flat.phase_peaks(trace, lines) == {"start": 300.0, "stage1": 500.0, "stage2": 450.0, "finalize": 900.0}
    # stage 2 never logged its end (a failed run): no stage2 or finalize phase
    assert flat.phase_peaks(trace, lines[:2]) == {"start": 300.0, "stage1": 500.0}
