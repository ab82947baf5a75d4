"""The run's work lists live on the store, not in the driver (issue 14, part 2): stage 1's
manifest holds exactly the chip-dates still to compute (transient skips included), Ray Data reads
stage 1's and stage 2's work from it / from compact index arrays, completion is counted per date,
and the parallel summary equals the serial one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lssr_ray.config import GridConfig, MapConfig
from lssr_ray.data.aoi import write_box_aoi
from lssr_ray.errors import IncompleteRunError
from lssr_ray.mapping import manifest as M
from lssr_ray.mapping.partials import commit_partial, summarize
from lssr_ray.mapping.plan import committed, committed_at, pending_chip_dates, plan_map, work_items

# EPSG:32616 box over the Alabama L30 granule (the same one as tests/faults/test_plan_accounting.py)
ALABAMA_WIDE = (464000.0, 3397400.0, 472500.0, 3401000.0)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manifest")
    aoi = write_box_aoi(tmp / "alabama.geojson", ALABAMA_WIDE, "EPSG:32616")
    return plan_map(MapConfig(aoi=aoi, out=str(tmp / "m.zarr"), engine="bicubic",
                              grid=GridConfig(chip_size=16, overlap=4), block=6, quicklook=False, classifier="none"))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _commit_some(plan) -> tuple[str, str]:
    """Partials of mixed kinds at time step 0: ok, a transient skip (retried), a final skip."""
    ids = plan.chip_ids
    sr = np.zeros((6, 48, 48), np.float32)
    for cid in ids[:10]:
        commit_partial(plan.store, 0, cid, sr=sr, window=[0, 0, 48, 48], granules=["g1"], present=[1, 0, 1])
    commit_partial(plan.store, 0, ids[10], status="skipped", reason="transient_read", detail="HTTP 503")
    commit_partial(plan.store, 0, ids[11], status="skipped", reason="all_cloud", detail="Fmask")
    return ids[10], ids[11]


def _manifest_rows(plan, m):
    starts = np.concatenate([[0], np.cumsum(m.parts)])
    granules = {ti: ",".join(str(g.id) for g in grans) for ti, grans in plan.granules_by_time.items()}
    rows = M._read_parts({"part": np.arange(m.n_parts)}, store=plan.store, starts=starts, granules=granules,
                         storage_options=None)
    return [{"chips": c, "ti": int(t), "granules": g} for c, t, g in zip(rows["chips"], rows["ti"], rows["granules"])]


def test_manifest_lists_exactly_the_chip_dates_to_compute(plan, monkeypatch):
    monkeypatch.setattr(M, "MAX_PARTS", 5)  # several items per part file
    transient, final = _commit_some(plan)
    n, nt = len(plan.chip_ids), len(plan.times)
    m = M.write_stage1_manifest(plan, lambda ti: committed_at(plan, ti, None), None)
    expected = work_items(plan, committed(plan, None))  # the in-memory list the driver used to hold
    assert _manifest_rows(plan, m) == expected
    assert m.items == len(expected) and m.n_parts <= 5 + nt and max(m.parts) >= 1
    assert m.resumed == 11 and m.chip_dates == n * nt - 11 == pending_chip_dates(plan, None)[0]
    assert pending_chip_dates(plan, None)[1] == 1
    listed = {c for it in expected if it["ti"] == 0 for c in it["chips"].split(",")}
    assert transient in listed and final not in listed and plan.chip_ids[0] not in listed

    # a later run's manifest replaces the earlier one: no stale part of it is read
    for cid in plan.chip_ids:
        commit_partial(plan.store, 0, cid, status="skipped", reason="nodata", detail="x")
    m2 = M.write_stage1_manifest(plan, lambda ti: committed_at(plan, ti, None), None)
    assert m2.parts[0] == 0 and m2.resumed == n and _manifest_rows(plan, m2) == work_items(plan, committed(plan, None))
    assert len(list(Path(M.stage1_dir(plan.store)).rglob("*.jsonl"))) == m2.n_parts


def test_completion_is_counted_per_date_and_names_what_is_missing(plan):
    from lssr_ray.mapping.accounting import check_accounted
    from lssr_ray.mapping.partials import partial_path

    ids = plan.chip_ids
    done = {0: set(ids), 1: set(ids[1:])}
    check_accounted(ids, done.get, 1, {0: "d0"})
    with pytest.raises(IncompleteRunError, match=f"1 of {2 * len(ids)} planned chip-dates not committed .e.g. {ids[0]} d1"):
        check_accounted(ids, lambda ti: done[ti], 2, {0: "d0", 1: "d1"})
    with pytest.raises(IncompleteRunError) as err:  # many missing: five named
        check_accounted(ids, lambda ti: set(), 1, {0: "d0"})
    assert f"{len(ids)} of {len(ids)}" in str(err.value) and str(err.value).count(" d0") == 5

    for cid in ids:  # on the store: every chip of the one date committed, then one lost
        commit_partial(plan.store, 0, cid, status="skipped", reason="nodata", detail="x")
    M.check_committed_counts(plan, None)
    Path(partial_path(plan.store, 0, ids[7])).unlink()
    with pytest.raises(IncompleteRunError, match=f"1 of {len(ids)} planned chip-dates not committed .e.g. {ids[7]} "):
        M.check_committed_counts(plan, None)


def test_ray_sources_and_parallel_summary(plan, ray_local, monkeypatch):
    monkeypatch.setattr(M, "MAX_PARTS", 7)
    for cid in plan.chip_ids[3:9]:  # retried by the next run: listed again
        commit_partial(plan.store, 0, cid, status="skipped", reason="transient_read", detail="HTTP 503")
    for cid in plan.chip_ids[20:40]:
        commit_partial(plan.store, 0, cid, sr=np.ones((6, 48, 48), np.float32), window=[0, 0, 48, 48],
                       present=[1, 1, 0])
    m = M.write_stage1_manifest(plan, lambda ti: committed_at(plan, ti, None), None)
    rows = M.stage1_source(plan, m, None).take_all()
    got = sorted((r["ti"], r["chips"], r["granules"]) for r in rows)
    assert got == sorted((it["ti"], it["chips"], it["granules"]) for it in work_items(plan, committed(plan, None)))

    chunks = M.chunk_source(plan, n_blocks=5).take_all()
    old = [{"row": c.row, "col": c.col, "ti": ti} for ti in range(len(plan.times)) for c in plan.stage.plan.chips]
    assert sorted((r["ti"], r["row"], r["col"]) for r in chunks) == sorted((c["ti"], c["row"], c["col"]) for c in old)
    assert len(chunks) == len(old)

    serial = summarize(plan.store, len(plan.times))
    assert serial["chip_dates_ok"] == 20 and serial["skip_reasons"]["transient_read"] == 6
    assert serial["modalities_by_time"] == {0: {"chips": 20, "dem": 20, "landcover": 20, "sar": 0}}
    n = len(plan.chip_ids)
    assert M.summarize_parallel(plan.store, len(plan.times), chips_per_date=n, shards=3) == serial
    one = M.summarize_parallel(plan.store, len(plan.times), chips_per_date=n)  # one shard per date
    assert json.dumps(one, sort_keys=True) == json.dumps(serial, sort_keys=True)
