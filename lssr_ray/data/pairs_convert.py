"""WorldCereal samples -> a pairs store (:mod:`lssr_ray.data.pairs`): find the inputs under a
folder, convert each training patch (:mod:`lssr_ray.data.pairs_patch`) and monthly cube
(:mod:`lssr_ray.data.pairs_monthly`), write the pairs, report what was skipped and why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lssr_ray.data import psf as _psf
from lssr_ray.data.blockgrid import SCALE
from lssr_ray.data.pair_sources import (
    NIR_CHOICES,
    ConversionReport,
    ConvertSettings,
    landcover_lookup,
)
from lssr_ray.data.pairs import DEFAULT_CHIP_SIZE, Pair, write_pairs
from lssr_ray.data.pairs_monthly import convert_monthly
from lssr_ray.data.pairs_patch import convert_patch
from lssr_ray.errors import ConfigError, MissingDataError

_MONTHLY_VAR = re.compile(r"^S2-L2A-B(02|03|04|08|8A|11|12)$")


def _is_monthly_cube(path: Path) -> bool:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            return any(_MONTHLY_VAR.match(v) for v in nc.variables)
    except OSError:
        return False


def _find_inputs(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(patch folders, monthly cubes, unrecognised files) under ``root`` (recursive)."""
    from lssr_ray.data.worldcereal import PATCH_LAYERS

    patches, cubes, other = [], [], []
    for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        files = sorted(p for p in d.iterdir() if p.is_file())
        is_patch = any(f.name.startswith(tuple(PATCH_LAYERS.values())) and f.suffix == ".nc" for f in files)
        if is_patch:
            patches.append(d)
        for f in files:
            if f.name.startswith(tuple(PATCH_LAYERS.values())) and f.suffix == ".nc":
                continue
            if is_patch and f.name.startswith("dem_") and f.suffix == ".tif":
                continue
            if f.suffix == ".nc" and _is_monthly_cube(f):
                cubes.append(f)
            elif f.suffix.lower() in (".nc", ".tif", ".tiff"):
                other.append(f)
    return patches, cubes, other


def convert_worldcereal(
    patch_folder: str | Path,
    out: str | Path,
    *,
    max_date_gap_days: int = 1,
    min_clear: float = 0.9,
    chip_size: int = DEFAULT_CHIP_SIZE,
    nir: str = "B08",
    band_adjust: str = "hls_s2a",
    mtf_at_nyquist: float = _psf.DEFAULT_MTF_AT_NYQUIST,
    max_sar_gap_days: int = 6,
    real: bool = True,
    synthetic: bool = True,
    chip_stride: int | None = None,
    mode: str = "w",
    storage_options: dict[str, Any] | None = None,
) -> ConversionReport:
    """Convert WorldCereal patches under ``patch_folder`` into a pairs store at ``out``.

    ``patch_folder`` is one patch folder or a folder of them (searched recursively). Training
    patches (``L8_SR_10m_*``, ``S2_L2A_10m_*``, ``S2_L2A_20m_*``, ``S1_GRD-ASCENDING_20m_*``,
    ``OUTPUT_POLY-*``, ``dem_*.tif``; any subset) give real L8-S2 pairs (L8 and S2 both at least
    ``min_clear`` clear over the chip, dates at most ``max_date_gap_days`` apart) and synthetic
    pairs (each clear S2 date degraded by :func:`lssr_ray.data.psf.degrade`); openEO monthly
    cubes (``S2-L2A-B*`` variables) give synthetic pairs. ``nir``: S2 band used as the NIR
    target (``"B08"`` 10 m or ``"B8A"`` 20 m). ``band_adjust``: MSI -> OLI adjustment of all
    S2-derived reflectance (``"none"``, ``"hls_s2a"``, ``"hls_s2b"``). Every layer or date not
    used is listed in the returned report with the reason. ``chip_stride`` (30 m cells): chip
    origins every ``chip_stride`` cells instead of the default evenly spread overlapping chips.
    Every pair records its ``location`` (:func:`location_from_folder` of its folder).
    """
    if nir not in NIR_CHOICES:
        raise ConfigError(f"nir must be one of {NIR_CHOICES}, got {nir!r}")
    if band_adjust not in _psf.BANDPASS_CHOICES:
        raise ConfigError(f"band_adjust must be one of {_psf.BANDPASS_CHOICES}, got {band_adjust!r}")
    if not 0.0 <= min_clear <= 1.0:
        raise ConfigError(f"min_clear must be a fraction in [0, 1], got {min_clear}")
    if max_date_gap_days < 0 or max_sar_gap_days < 0:
        raise ConfigError("max_date_gap_days and max_sar_gap_days must be >= 0 days")
    if chip_size < 1:
        raise ConfigError(f"chip_size must be >= 1 (30 m cells), got {chip_size}")
    if chip_stride is not None and chip_stride < 1:
        raise ConfigError(f"chip_stride must be >= 1 (30 m cells) or None, got {chip_stride}")
    _psf.sigma_for_mtf(mtf_at_nyquist, SCALE)  # validates the range
    root = Path(patch_folder)
    if not root.is_dir():
        raise MissingDataError(f"patch folder not found: {root}")
    st = ConvertSettings(max_date_gap_days, min_clear, chip_size, nir, band_adjust, mtf_at_nyquist,
                   max_sar_gap_days, real, synthetic, landcover_lookup(), chip_stride)
    rep = ConversionReport()
    patches, cubes, other = _find_inputs(root)
    by_dir: dict[Path, list[str]] = {}
    for f in other:
        by_dir.setdefault(f.parent, []).append(f.name)
    for d, names in by_dir.items():
        rel = d.relative_to(root).as_posix() if d != root else "."
        rep.skip(f"{rel}: {', '.join(names)}", "not a WorldCereal patch layer or monthly input cube (ignored)")
    pairs: list[Pair] = []
    for d in patches:
        pairs += convert_patch(d, st, rep)
    for c in cubes:
        pairs += convert_monthly(c, st, rep)
    if not patches and not cubes:
        raise MissingDataError(f"{root} holds no WorldCereal patch files or monthly input cubes")
    if pairs:
        write_pairs(pairs, out, mode=mode, storage_options=storage_options)
    rep.written = [p.pair_id for p in pairs]
    return rep


__all__ = ["convert_worldcereal"]
