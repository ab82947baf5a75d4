"""Never plan the empty, never hang (issue 10 item 2).

* an AOI much larger than the catalog's coverage plans only the covered chips and reports the
  rest as "outside coverage: N km2" (printed, stored in the store's provenance);
* a run estimated over the limit is refused without --yes when not on a terminal, before
  anything is written or Ray starts;
* a many-chip plan (hundreds of chips, bicubic engine) ends with every planned chip-date committed
  or skipped with a recorded reason, and completion is checked from the partials;
* the stage-1 loop gives up on a stalled stream instead of waiting forever.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from lssr_ray.config import REPO_ROOT, GridConfig, MapConfig
from lssr_ray.data.aoi import write_box_aoi
from lssr_ray.errors import ConfigError, IncompleteRunError

sys.path.insert(0, str(REPO_ROOT / "tests"))
from _jobs import load_job

FLANDERS_TILE = (501340.0, 5629030.0, 502000.0, 5629690.0)  # the archive's only 31UDS granule (22 x 22 px)
BELGIUM_LIKE = (490000.0, 5618000.0, 514000.0, 5642000.0)  # EPSG:32631, 24 x 24 km around it
# EPSG:32616 box over the Alabama L30 granule's east edge (x 452475..471285): 1.2 km stick out east
ALABAMA_WIDE = (464000.0, 3397400.0, 472500.0, 3401000.0)  # 231 chips of 16 px planned


@pytest.fixture(scope="module")
def job():
    return load_job("map_region")


def test_aoi_larger_than_coverage_plans_only_covered_chips(tmp_path):
    from lssr_ray.mapping.plan import plan_map

    aoi = write_box_aoi(tmp_path / "belgium_like.geojson", BELGIUM_LIKE, "EPSG:32631")
    plan = plan_map(MapConfig(aoi=aoi, out=str(tmp_path / "o.zarr")))
    chips = plan.stage.plan
    # the whole box would be ~24 km / 1.68 km core = 15 x 15 = 225 chips; the tile is 660 m wide
    assert 1 <= len(chips) <= 4, chips.summary()
    tile_km2 = (FLANDERS_TILE[2] - FLANDERS_TILE[0]) * (FLANDERS_TILE[3] - FLANDERS_TILE[1]) / 1e6
    assert plan.stage.outside_km2 == pytest.approx(24 * 24 - tile_km2, rel=0.01)
    assert chips.aoi_area_km2 == pytest.approx(tile_km2, rel=0.05)
    note = [n for n in plan.notes if n.startswith("outside coverage:")]
    assert note and f"{plan.stage.outside_km2:.2f} km2" in note[0], plan.notes


def test_run_over_the_limit_without_yes_is_refused_non_interactive(job, tmp_path, capsys):
    import ray

    was_up = ray.is_initialized()
    aoi = write_box_aoi(tmp_path / "alabama.geojson", ALABAMA_WIDE, "EPSG:32616")
    out = tmp_path / "refused.zarr"
    rc = job.main(["--aoi", aoi, "--out", str(out), "--engine", "bicubic", "--chip-size", "16", "--overlap", "4",
                   "--confirm-over-s", "10", "--no-progress", "--classifier", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and "pass --yes to start it" in err[-1] and "chip-date" in err[-1], err
    assert not out.exists()  # nothing written
    assert ray.is_initialized() == was_up  # and no Ray started for it


def test_declined_confirmation_starts_nothing(tmp_path):
    from lssr_ray.mapping.pipeline import run_map

    aoi = write_box_aoi(tmp_path / "alabama.geojson", ALABAMA_WIDE, "EPSG:32616")
    asked = []
    cfg = MapConfig(aoi=aoi, out=str(tmp_path / "o.zarr"), engine="bicubic", grid=GridConfig(chip_size=16, overlap=4),
                    confirm_over_s=10, classifier="none")
    with pytest.raises(ConfigError, match="run not started"):
        run_map(cfg, progress=False, confirm=lambda q: asked.append(q) or False)
    assert len(asked) == 1 and "Start it? [y/N]" in asked[0]
    assert not (tmp_path / "o.zarr").exists()


def test_many_chip_plan_every_chip_committed_or_skipped_with_reason(tmp_path, caplog):
    import logging

    import zarr

    from lssr_ray.mapping.accounting import check_accounted
    from lssr_ray.mapping.partials import SKIP_REASONS, done_chip_ids, load_partial, partial_path
    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.plan import plan_map

    aoi = write_box_aoi(tmp_path / "alabama.geojson", ALABAMA_WIDE, "EPSG:32616")
    out = str(tmp_path / "many.zarr")
    cfg = MapConfig(aoi=aoi, out=out, engine="bicubic", grid=GridConfig(chip_size=16, overlap=4), block=6, batch_size=16,
                    keep_partials=True,  # the partials are the books checked below
                    confirm_over_s=10, yes=True, quicklook=False, classifier="none", read_actors=1)
    plan = plan_map(cfg)
    ids = [c.id for c in plan.stage.plan.chips]
    nt = len(plan.times)
    assert len(ids) * nt >= 200, len(ids)  # hundreds of chip-dates
    assert plan.stage.outside_km2 > 1.0  # the part east of the granule is not planned
    seen = []
    with caplog.at_level(logging.INFO, logger="lssr_ray"):
        summary = run_map(cfg, progress=False, on_commit=seen.append)
    assert any(r.getMessage().startswith("NOTE: outside coverage:") for r in caplog.records), caplog.text

    records = {}
    for ti in range(nt):
        for cid in ids:
            p = load_partial(out, ti, cid, with_sr=False)
            assert p is not None, f"{cid} t{ti} has no committed partial"
            records[(ti, cid)] = p.record
    for key, rec in records.items():
        assert rec["status"] in ("ok", "skipped"), (key, rec)
        if rec["status"] == "skipped":
            assert rec["reason"] in SKIP_REASONS and rec.get("detail"), (key, rec)
    n_ok = sum(r["status"] == "ok" for r in records.values())
    assert n_ok > 0 and summary.computed == len(ids) * nt == len(seen)
    assert sorted((int(r["ti"]), r["chip_id"]) for r in seen) == sorted(records)
    attrs = zarr.open_group(out, mode="r").attrs
    assert attrs["completed"] is True
    assert attrs["chip_dates_ok"] + attrs["chip_dates_skipped"] == len(ids) * nt
    assert attrs["outside_coverage_km2"] == pytest.approx(plan.stage.outside_km2, abs=1e-3)
    assert any(n.startswith("outside coverage:") for n in attrs["aoi_notes"])

    # the books are read from the partials: one lost partial is named, not passed over
    done = {ti: done_chip_ids(out, ti) for ti in range(nt)}
    check_accounted(ids, done, nt, plan.labels)
    Path(partial_path(out, 0, ids[7])).unlink()
    done = {ti: done_chip_ids(out, ti) for ti in range(nt)}
    with pytest.raises(IncompleteRunError, match=f"1 of {len(ids) * nt} planned chip-dates not committed.*{ids[7]}"):
        check_accounted(ids, done, nt, plan.labels)


def test_stalled_stream_raises_instead_of_waiting_forever():
    from lssr_ray.mapping.accounting import stream_with_watchdog

    release = threading.Event()
    beats = []

    def stalls():
        yield "first"
        release.wait(30)  # an executor that stops delivering
        yield "never"

    got: list[str] = []
    t0 = time.monotonic()
    stream = stream_with_watchdog(stalls, stall_s=2.0, idle=lambda: beats.append(1),
                                  describe=lambda: f" ({len(got)} of 9 chip-dates)")
    with pytest.raises(IncompleteRunError, match=r"stalled: no chip committed for 2 s \(1 of 9"):
        got.extend(stream)
    release.set()
    assert got == ["first"] and 2.0 <= time.monotonic() - t0 < 10 and beats


def test_stream_passes_errors_and_ends():
    from lssr_ray.mapping.accounting import stream_with_watchdog

    assert list(stream_with_watchdog(lambda: iter([1, 2, 3]), stall_s=5)) == [1, 2, 3]

    def broken():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(stream_with_watchdog(broken, stall_s=5))


def test_resuming_a_store_planned_on_another_grid_is_refused(tmp_path):
    """A store with the same run settings but another grid (e.g. planned over the whole AOI before
    chips followed coverage) is not resumed into: its chunks would land in the wrong place."""
    from lssr_ray.mapping.pipeline import run_map
    from lssr_ray.mapping.plan import plan_map
    from lssr_ray.mapping.provenance import provenance_attrs
    from lssr_ray.mapping.store import create_store

    aoi = write_box_aoi(tmp_path / "belgium_like.geojson", BELGIUM_LIKE, "EPSG:32631")
    out = str(tmp_path / "old_grid.zarr")
    cfg = MapConfig(aoi=aoi, out=out, engine="bicubic", classifier="none", quicklook=False)
    plan = plan_map(cfg)
    g = plan.stage.plan.grid
    whole = (g.output_shape[0] + plan.stage.plan.chunk_size, g.output_shape[1])  # one chunk row more
    create_store(out, crs=g.crs, transform=tuple(g.output_transform)[:6], shape=whole,
                 chunk=plan.stage.plan.chunk_size, times=plan.times,
                 attrs=provenance_attrs([], plan.identity["base_sha256"],
                                        extra={"run_config": json.dumps(plan.identity, sort_keys=True)}))
    with pytest.raises(ConfigError, match=r"cannot resume .*its grid is .* this run plans"):
        run_map(cfg, progress=False)
