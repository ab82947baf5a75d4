"""Locate the bundled real sample data (``data/samples/<set>/``) and verify its checksums."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lssr_ray.config import REPO_ROOT
from lssr_ray.errors import MissingDataError

SAMPLES_DIR = REPO_ROOT / "data" / "samples"
SAMPLE_SETS = (
    "landsat8_l1t_alabama_2015",
    "worldcereal_flanders_31UDS_2018",
    "worldcereal_hesbaye_monthly_2021",
    "worldcereal_tanzania_37MBS_2021",
)


def sample_dir(name: str, *, root: str | Path | None = None) -> Path:
    """Folder of sample set ``name`` (one of :data:`SAMPLE_SETS`)."""
    if name not in SAMPLE_SETS:
        raise MissingDataError(f"unknown sample set {name!r}; valid: {SAMPLE_SETS}")
    d = Path(root or SAMPLES_DIR) / name
    if not d.is_dir():
        raise MissingDataError(f"sample set folder missing: {d} (is this a source checkout?)")
    return d


def sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_sums(path: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum``-format file (``<hex>  <relative path>`` per line)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line.strip())
        if m:
            out[m.group(2)] = m.group(1)
    return out


def provenance_sums(provenance_md: str | Path) -> dict[str, str]:
    """Checksums listed in a PROVENANCE.md ``## Checksums (sha256)`` block (file name -> hex)."""
    return read_sums(provenance_md)


def verify(root: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """Check every entry of ``<root>/SHA256SUMS``; returns ``{path: (expected, actual)}`` for
    mismatched or missing files (empty when all match)."""
    r = Path(root or SAMPLES_DIR)
    sums_file = r / "SHA256SUMS"
    if not sums_file.is_file():
        raise MissingDataError(f"checksum list not found: {sums_file}")
    bad = {}
    for rel, expected in read_sums(sums_file).items():
        p = r / rel
        actual = sha256(p) if p.is_file() else "missing"
        if actual != expected:
            bad[rel] = (expected, actual)
    return bad


__all__ = ["SAMPLES_DIR", "SAMPLE_SETS", "provenance_sums", "read_sums", "sample_dir", "sha256", "verify"]
