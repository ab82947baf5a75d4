"""scripts/compare_stores.py: the tool behind issue 12's "bitwise equal before and after" claim."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import zarr

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("compare_stores", REPO_ROOT / "scripts" / "compare_stores.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _store(path: Path, *, value: int = 7, scale: float = 1e-4) -> str:
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    a = g.create_array("reflectance", shape=(2, 4, 4), chunks=(1, 4, 4), dtype="int16", fill_value=-9999)
    data = np.arange(32, dtype=np.int16).reshape(2, 4, 4)
    data[1, 2, 3] = value
    a[...] = data
    a.attrs.update({"scale_factor": scale, "_ARRAY_DIMENSIONS": ["time", "y", "x"]})
    return str(path)


def test_equal_stores_pass(tmp_path):
    tool = _tool()
    lines = tool.compare(_store(tmp_path / "a.zarr"), _store(tmp_path / "b.zarr"))
    assert lines == ["same reflectance: int16 (2, 4, 4), 32 values bitwise equal"]
    assert tool.main([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")]) == 0


def test_one_changed_value_or_decoding_attribute_fails(tmp_path):
    tool = _tool()
    a = _store(tmp_path / "a.zarr")
    assert tool.compare(a, _store(tmp_path / "b.zarr", value=8)) == ["DIFF reflectance: values differ"]
    assert tool.compare(a, _store(tmp_path / "c.zarr", scale=1e-3)) == ["DIFF reflectance: attr scale_factor differ"]
    assert tool.main([a, str(tmp_path / "b.zarr")]) == 1
