"""The bundled samples are byte-identical to what their PROVENANCE.md files list."""

from __future__ import annotations

import shutil

import pytest

from lssr_ray.data import samples
from lssr_ray.errors import MissingDataError


def test_every_file_is_listed_and_matches():
    listed = samples.read_sums(samples.SAMPLES_DIR / "SHA256SUMS")
    on_disk = {
        str(p.relative_to(samples.SAMPLES_DIR))
        for p in samples.SAMPLES_DIR.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "README.md")
    }
    assert set(listed) == on_disk
    assert samples.verify() == {}


def test_sums_equal_the_provenance_checksums():
    listed = samples.read_sums(samples.SAMPLES_DIR / "SHA256SUMS")
    compared = 0
    for name in samples.SAMPLE_SETS:
        prov = samples.provenance_sums(samples.sample_dir(name) / "PROVENANCE.md")
        assert prov, name
        for fname, digest in prov.items():
            key = f"{name}/{fname}"
            if key in listed:  # AgERA5/CropCalendar are listed upstream but were not copied
                assert listed[key] == digest, key
                compared += 1
    assert compared == 22  # 9 Alabama + 7 Flanders + 2 hesbaye + 4 Tanzania


def test_a_changed_byte_is_detected(tmp_path):
    src = samples.sample_dir("worldcereal_flanders_31UDS_2018") / "dem_31UDS.tif"
    (tmp_path / "s").mkdir()
    dst = tmp_path / "s" / "dem_31UDS.tif"
    shutil.copy(src, dst)
    (tmp_path / "SHA256SUMS").write_text(f"{samples.sha256(src)}  s/dem_31UDS.tif\n")
    assert samples.verify(tmp_path) == {}
    data = bytearray(dst.read_bytes())
    data[-1] ^= 0xFF
    dst.write_bytes(bytes(data))
    bad = samples.verify(tmp_path)
    assert list(bad) == ["s/dem_31UDS.tif"] and bad["s/dem_31UDS.tif"][1] != samples.sha256(src)


def test_unknown_set_names_the_valid_ones():
    with pytest.raises(MissingDataError, match="landsat8_l1t_alabama_2015"):
        samples.sample_dir("nope")
