"""Which aux layers each chip had is counted from the committed partials and never silent."""

from __future__ import annotations

from lssr_ray.mapping import partials as P
from lssr_ray.mapping.summary import MapSummary, modality_lines, modality_warnings


def test_partials_count_modalities_per_date(tmp_path):
    import numpy as np

    store = str(tmp_path / "s.zarr")
    sr = np.zeros((6, 3, 3), np.float32)
    flags = {"r0000c0000": (1, 1, 1), "r0000c0001": (1, 1, 0), "r0001c0000": (1, 0, 0)}
    for cid, present in flags.items():
        P.commit_partial(store, 0, cid, sr=sr, present=np.asarray(present, np.float32))
    P.commit_partial(store, 1, "r0000c0000", sr=sr, present=np.ones(3, np.float32))
    P.commit_partial(store, 1, "r0000c0001", status="skipped", reason="all_cloud")  # not counted
    assert P.load_partial(store, 0, "r0000c0001", with_sr=False).record["modalities"] == ["dem", "landcover"]
    by_time = P.summarize(store, 2)["modalities_by_time"]
    assert by_time == {0: {"chips": 3, "dem": 3, "landcover": 2, "sar": 1},
                       1: {"chips": 1, "dem": 1, "landcover": 1, "sar": 1}}
    labelled = {"2021-06-01": by_time[0], "2021-06-17": by_time[1]}
    warn = modality_warnings(labelled)
    assert warn == [
        "aux layer landcover missing for 1 of 4 predicted chip-dates (2021-06-01: 1); those chips were predicted without it",
        "aux layer sar missing for 2 of 4 predicted chip-dates (2021-06-01: 2); those chips were predicted without it",
    ]
    assert modality_lines(labelled) == ["modalities dem 4/4, landcover 3/4, sar 2/4 chip-dates",
                                        "           sar per date: 2021-06-01 1/3, 2021-06-17 1/1"]
    text = MapSummary(store=store, run_id="x", engine="bicubic", chips=3, n_times=2, chip_dates=6,
                      modalities=labelled, warnings=warn).text()
    assert "sar 2/4" in text and "WARNING    aux layer sar missing" in text
    assert modality_warnings({"2021-06-01": {"chips": 2, "dem": 2, "landcover": 2, "sar": 2}}) == []
