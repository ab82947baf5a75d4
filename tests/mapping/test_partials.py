"""Atomic per-chip partials: round trip, skip records, resume bookkeeping, neighbourhoods,
locally and on a loopback S3 server (moto_server subprocess)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lssr_ray.errors import StoreError
from lssr_ray.mapping import partials as P

SR_SHAPE = (6, 48, 48)


def _sr(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).uniform(0, 0.5, SR_SHAPE).astype("float32")
    a[:, :3, :3] = np.nan
    return a


def _run(store, chips, *, fail_on=None, storage_options=None):
    """Stand-in for the stage-1 loop: skip done chips, commit the rest; return processed ids."""
    done = P.done_chip_ids(store, 0, storage_options=storage_options)
    processed = []
    for i, cid in enumerate(chips):
        if cid in done:
            continue
        if cid == fail_on:
            raise RuntimeError("worker died")
        processed.append(cid)
        if i % 4 == 3:
            P.commit_partial(store, 0, cid, status="skipped", reason="all_cloud", detail="Fmask 100% cloud",
                             storage_options=storage_options)
        else:
            P.commit_partial(
                store,
                0,
                cid,
                sr=_sr(i),
                window=(-6, -6 + 36 * i, 48, 48),
                granules=["HLS.L30.T16SDC.2015126T163000.v2.0"],
                timing={"infer_s": 0.1},
                storage_options=storage_options,
            )
    return processed


def test_roundtrip_and_no_temp_left(tmp_path):
    store = str(tmp_path / "out.zarr")
    sr = _sr(0)
    url = P.commit_partial(
        store,
        1,
        "r0001c0002",
        sr=sr,
        window=(30, 66, 48, 48),
        granules=["g1"],
        timing={"read_s": 0.5, "infer_s": 1.25},
    )
    assert url == P.partial_path(store, 1, "r0001c0002") and url.endswith("/_partials/t0001/r0001c0002.npz")
    assert P.load_partial(store, 0, "r0001c0002") is None  # another date's partial
    p = P.load_partial(store, 1, "r0001c0002")
    assert p.ok and p.sr.dtype == np.float32
    np.testing.assert_array_equal(p.sr, sr)  # bit-exact, NaNs included
    assert p.record["window"] == [30, 66, 48, 48] and p.record["granules"] == ["g1"]
    assert p.record["timing"] == {"read_s": 0.5, "infer_s": 1.25} and p.record["time_index"] == 1
    # the layout of docs/ARCHITECTURE.md: <store>/_partials/tNNNN/<chip_id>.npz
    assert sorted(os.listdir(tmp_path / "out.zarr" / "_partials")) == ["t0001"]
    assert sorted(os.listdir(tmp_path / "out.zarr" / "_partials" / "t0001")) == ["r0001c0002.npz"]
    # npz without pickles: plain numpy can read it
    with np.load(tmp_path / "out.zarr" / "_partials" / "t0001" / "r0001c0002.npz", allow_pickle=False) as z:
        assert set(z.files) == {"sr", "record"}


def test_skips_and_validation(tmp_path):
    store = str(tmp_path / "out.zarr")
    P.commit_partial(store, 0, "r0000c0003", status="skipped", reason="missing_granule", detail="B05 absent",
                     granules=["g"])
    p = P.load_partial(store, 0, "r0000c0003")
    assert not p.ok and p.sr is None
    assert p.record["reason"] == "missing_granule" and p.record["detail"] == "B05 absent"
    with pytest.raises(StoreError, match="all_cloud"):
        P.commit_partial(store, 0, "r0000c0004", status="skipped", reason="cloudy")
    with pytest.raises(StoreError, match="r\\{row:04d\\}"):
        P.commit_partial(store, 0, "chip7", sr=_sr(1))
    with pytest.raises(StoreError, match="needs sr"):
        P.commit_partial(store, 0, "r0000c0004")
    with pytest.raises(StoreError, match="does not match"):
        P.commit_partial(store, 0, "r0000c0004", sr=_sr(1), window=(0, 0, 10, 10))
    with pytest.raises(StoreError, match="time index"):
        P.partial_path(store, -1, "r0000c0004")
    assert P.load_partial(store, 0, "r0009c0009") is None


def test_resume_after_crash(tmp_path):
    store = str(tmp_path / "out.zarr")
    chips = [P.chip_id(0, c) for c in range(10)]
    with pytest.raises(RuntimeError):
        _run(store, chips, fail_on=chips[6])
    # a writer killed mid-write leaves only its hidden temp file: not a commit
    (tmp_path / "out.zarr" / "_partials" / "t0000" / ".r0000c0006.npz.dead.tmp").write_bytes(b"half")
    assert P.done_chip_ids(store, 0) == set(chips[:6])
    assert P.done_chip_ids(store, 1) == set()
    assert P.load_partial(store, 0, chips[6]) is None
    second = _run(store, chips)
    assert second == chips[6:]  # only the unfinished chips are redone
    assert _run(store, chips) == []
    assert P.summarize(store, 1) == {"chip_dates_ok": 8, "chip_dates_skipped": 2, "skip_reasons": {"all_cloud": 2},
                                     "modalities_by_time": {}}  # committed without presence flags
    P.commit_partial(store, 2, chips[0], status="skipped", reason="nodata")  # a later date: counted too
    assert P.summarize(store, 3) == {"chip_dates_ok": 8, "chip_dates_skipped": 3,
                                     "skip_reasons": {"all_cloud": 2, "nodata": 1}, "modalities_by_time": {}}


def test_neighbourhood(tmp_path):
    store = str(tmp_path / "out.zarr")
    P.commit_partial(store, 0, P.chip_id(0, 0), sr=_sr(0))
    P.commit_partial(store, 0, P.chip_id(0, 1), sr=_sr(1))
    P.commit_partial(store, 0, P.chip_id(1, 0), status="skipped", reason="nodata")
    P.commit_partial(store, 1, P.chip_id(1, 1), sr=_sr(2))  # another date: not a neighbour at t0
    nb = P.load_neighbourhood(store, 0, 0, 0)
    assert set(nb) == {(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    np.testing.assert_array_equal(nb[(0, 1)], _sr(1))
    assert nb[(1, 0)] is None and nb[(-1, 0)] is None and nb[(1, 1)] is None
    assert P.parse_chip_id("r0012c0345") == (12, 345)


def test_s3_commit_and_resume(s3_bucket):
    bucket, so, client = s3_bucket
    store = f"{bucket}/run1/out.zarr"
    chips = [P.chip_id(2, c) for c in range(6)]
    with pytest.raises(RuntimeError):
        _run(store, chips, fail_on=chips[4], storage_options=so)
    assert P.done_chip_ids(store, 0, storage_options=so) == set(chips[:4])
    assert _run(store, chips, storage_options=so) == chips[4:]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket[len("s3://"):])["Contents"])
    assert keys == [f"run1/out.zarr/_partials/t0000/{c}.npz" for c in chips]  # no temp objects
    p = P.load_partial(store, 0, chips[1], storage_options=so)
    np.testing.assert_array_equal(p.sr, _sr(1))
    assert P.load_partial(store, 0, chips[3], storage_options=so).record["reason"] == "all_cloud"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_remove_partials_of_a_complete_store(where, tmp_path, request):
    """A completed run deletes ``_partials/`` (every time step) and the work manifest kept with
    them, and nothing else of the store."""
    if where == "s3":
        bucket, so, _ = request.getfixturevalue("s3_bucket")
        store = f"{bucket}/out.zarr"
    else:
        so, store = None, str(tmp_path / "out.zarr")
    P.commit_partial(store, 0, "r0000c0000", sr=_sr(0), storage_options=so)
    P.commit_partial(store, 3, "r0001c0000", status="skipped", reason="nodata", storage_options=so)
    from lssr_ray.fileio import atomic_put, filesystem

    atomic_put(f"{store}/.zattrs", b"{}", so)  # a store file next to the partials: must survive
    atomic_put(f"{store}/{P.MANIFEST_DIR}/stage1/t0000/p000000.jsonl", b'{"chips": "r0000c0000", "ti": 0}', so)
    assert P.partials_present(store, storage_options=so)
    assert P.remove_partials(store, storage_options=so) is True
    fs, path = filesystem(f"{store}/{P.MANIFEST_DIR}", so)
    fs.invalidate_cache()
    assert not fs.exists(path)
    assert not P.partials_present(store, storage_options=so)
    assert P.done_chip_ids(store, 0, storage_options=so) == set() == P.done_chip_ids(store, 3, storage_options=so)
    fs, path = filesystem(f"{store}/.zattrs", so)
    assert fs.cat_file(path) == b"{}"
    assert P.remove_partials(store, storage_options=so) is False  # nothing left: no error


def test_pixels_are_blosc_members_and_earlier_partials_still_load(tmp_path):
    """Pixel members are Blosc bytes the record describes (a smooth field compresses well below
    its float32 size); a partial written the earlier way (``savez_compressed``, float members,
    no ``encoding``) loads to the same arrays; loaded arrays are writable (blending may scale
    them in place)."""
    import io
    import json
    import zipfile

    store = str(tmp_path / "out.zarr")
    yy, xx = np.mgrid[:48, :48]
    sr = np.stack([(0.1 + 0.002 * b) + 0.001 * yy + 0.0005 * xx for b in range(6)]).astype("float32")
    sr[:, :3, :3] = np.nan
    cons = np.full(SR_SHAPE, 0.01, np.float32)
    url = P.commit_partial(store, 0, "r0000c0001", sr=sr, layers={"consistency": cons}, window=(0, 0, 48, 48))
    with zipfile.ZipFile(url) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert infos["sr.npy"].compress_type == zipfile.ZIP_STORED and infos["sr.npy"].file_size < sr.nbytes / 2
    with np.load(url, allow_pickle=False) as z:
        assert z["sr"].dtype == np.uint8
        enc = json.loads(str(z["record"]))["encoding"]
    assert enc["sr"] == {"codec": P.PIXEL_CODEC, "dtype": "<f4", "shape": list(SR_SHAPE)}
    p = P.load_partial(store, 0, "r0000c0001")
    np.testing.assert_array_equal(p.sr, sr)
    np.testing.assert_array_equal(p.layers["consistency"], cons)
    assert p.sr.flags.writeable and p.layers["consistency"].flags.writeable

    old = io.BytesIO()  # the earlier layout, as a run of the previous version left it
    record = {"chip_id": "r0000c0002", "status": "ok", "window": [0, 0, 48, 48], "time_index": 0}
    np.savez_compressed(old, sr=sr, consistency=cons, record=np.array(json.dumps(record)))
    path = tmp_path / "out.zarr" / "_partials" / "t0000" / "r0000c0002.npz"
    path.write_bytes(old.getvalue())
    q = P.load_partial(store, 0, "r0000c0002")
    np.testing.assert_array_equal(q.sr, sr)
    np.testing.assert_array_equal(q.layers["consistency"], cons)
    assert P.done_chip_ids(store, 0) == {"r0000c0001", "r0000c0002"}


@pytest.mark.parametrize("damage", ["not_a_zip", "truncated_pixels"])
def test_unreadable_partial_is_one_store_error_naming_it(tmp_path, damage):
    """A partial damaged outside the job (a disk fault, a hand edit) stops the reader with a
    StoreError that names the file and says how to recover, not a zip / Blosc traceback."""
    import zipfile

    store = str(tmp_path / "out.zarr")
    url = P.commit_partial(store, 0, "r0000c0001", sr=_sr(1), window=(0, 0, 48, 48))
    if damage == "not_a_zip":
        with open(url, "wb") as fh:
            fh.write(b"half a partial")
    else:  # a valid zip whose sr member holds the first 100 bytes of its Blosc frame
        with np.load(url, allow_pickle=False) as z:
            record, sr = z["record"], z["sr"]
        with zipfile.ZipFile(url, "w") as zf:
            for name, arr in (("record", record), ("sr", sr[:100])):
                with zf.open(f"{name}.npy", "w") as fh:
                    np.lib.format.write_array(fh, arr)
    with pytest.raises(StoreError, match=r"r0000c0001\.npz is unreadable .*delete it and rerun"):
        P.load_partial(store, 0, "r0000c0001")
    if damage == "truncated_pixels":  # the record alone still reads (counts, resume bookkeeping)
        assert P.load_partial(store, 0, "r0000c0001", with_sr=False).record["chip_id"] == "r0000c0001"
    else:
        with pytest.raises(StoreError, match="unreadable"):
            P.load_partial(store, 0, "r0000c0001", with_sr=False)
