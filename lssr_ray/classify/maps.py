"""Per-class area statistics (hectares) and a legend map PNG from a crop_type array.

The area table is computed from per-class pixel counts (:func:`area_table`), so a stage that
classifies a region chunk by chunk sums the chunks' counts and never holds the whole map.

``crop_type`` is (H, W) uint16 WorldCereal codes with 0 = nodata (no valid input), on a grid
whose affine ``transform`` is in metres (UTM), so one pixel covers |det(transform)| m².
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.classify.labels import NODATA_CODE, CropTypeTable, load_croptype_table
from lssr_ray.errors import ConfigError

__all__ = ["area_statistics", "area_table", "class_counts", "plot_crop_map", "write_area_csv",
           "write_area_csv_from_counts"]


def _pixel_area_m2(transform: Any, crs: Any | None) -> float:
    if crs is not None:
        from rasterio.crs import CRS

        c = CRS.from_user_input(crs)
        if c.is_geographic:
            raise ConfigError(f"areas need a projected CRS in metres (e.g. UTM); got geographic {c}")
    area = abs(transform.a * transform.e - transform.b * transform.d)
    if area <= 0:
        raise ConfigError(f"transform {tuple(transform)[:6]} has zero pixel area")
    return float(area)


def class_counts(crop_type: np.ndarray) -> dict[int, int]:
    """Pixels per code of a (H, W) crop_type array (nodata 0 included), ascending code."""
    ct = np.asarray(crop_type)
    if ct.ndim != 2:
        raise ConfigError(f"crop_type must be 2-D (H, W), got {ct.shape}")
    return {int(c): int(n) for c, n in zip(*np.unique(ct, return_counts=True))}


def area_table(
    counts: Mapping[int, int], transform: Any, *, table: CropTypeTable | None = None, crs: Any | None = None
) -> list[dict[str, Any]]:
    """Rows ``{code, name, pixels, area_ha, fraction}`` per class with pixels, ascending code,
    from ``counts`` ``{code: pixels}`` (e.g. summed over chunks) on a grid of ``transform``.

    ``fraction`` is the share of classified (non-nodata) pixels. A final row with code 0
    (``name`` "nodata") counts unclassified pixels; its fraction is of all pixels.
    """
    table = table or load_croptype_table()
    px_ha = _pixel_area_m2(transform, crs) / 1e4
    counts = {int(c): int(n) for c, n in counts.items() if n}
    n_valid = sum(n for c, n in counts.items() if c != NODATA_CODE)
    rows = [{"code": c, "name": table.name(c), "pixels": n, "area_ha": float(n * px_ha), "fraction": float(n / n_valid)}
            for c, n in sorted(counts.items()) if c != NODATA_CODE]
    n_nd = counts.get(NODATA_CODE, 0)
    rows.append({"code": NODATA_CODE, "name": "nodata", "pixels": n_nd, "area_ha": float(n_nd * px_ha),
                 "fraction": float(n_nd / sum(counts.values()))})
    return rows


def area_statistics(
    crop_type: np.ndarray, transform: Any, *, table: CropTypeTable | None = None, crs: Any | None = None
) -> list[dict[str, Any]]:
    """:func:`area_table` of a whole (H, W) crop_type array."""
    return area_table(class_counts(crop_type), transform, table=table, crs=crs)


def write_area_csv_from_counts(
    path: str | Path, counts: Mapping[int, int], transform: Any, *, table: CropTypeTable | None = None,
    crs: Any | None = None,
) -> Path:
    """Write :func:`area_table` of ``counts`` ``{code: pixels}`` as CSV (columns
    code,name,pixels,area_ha,fraction): what a stage that never holds the whole map writes."""
    rows = area_table(counts, transform, table=table, crs=crs)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["code", "name", "pixels", "area_ha", "fraction"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "area_ha": f"{r['area_ha']:.4f}", "fraction": f"{r['fraction']:.6f}"})
    return p


def write_area_csv(
    path: str | Path, crop_type: np.ndarray, transform: Any, *, table: CropTypeTable | None = None,
    crs: Any | None = None,
) -> Path:
    """:func:`write_area_csv_from_counts` of a whole (H, W) crop_type array."""
    return write_area_csv_from_counts(path, class_counts(crop_type), transform, table=table, crs=crs)


def plot_crop_map(
    path: str | Path,
    crop_type: np.ndarray,
    *,
    table: CropTypeTable | None = None,
    transform: Any | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a PNG of ``crop_type`` with one legend entry per class present ("<name> (<code>)").

    Nodata pixels are drawn transparent over a light-grey background and listed as "nodata".
    With ``transform`` the axes show map coordinates (metres).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ct = np.asarray(crop_type)
    if ct.ndim != 2:
        raise ConfigError(f"crop_type must be 2-D (H, W), got {ct.shape}")
    table = table or load_croptype_table()
    codes = [int(c) for c in np.unique(ct) if c != NODATA_CODE]
    idx = np.full(ct.shape, -1, np.int32)
    for i, c in enumerate(codes):
        idx[ct == c] = i
    base = plt.get_cmap("tab20")
    colors = [base(i % 20) for i in range(max(len(codes), 1))]
    cmap = ListedColormap(colors).with_extremes(bad=(0, 0, 0, 0))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.set_facecolor("0.85")
    extent = None
    if transform is not None:
        h, w = ct.shape
        x0, y0 = transform.c, transform.f
        extent = (x0, x0 + w * transform.a, y0 + h * transform.e, y0)
    ax.imshow(np.ma.masked_less(idx, 0), cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5,
              interpolation="nearest", extent=extent)
    handles = [Patch(color=colors[i], label=f"{table.name(c)} ({c})") for i, c in enumerate(codes)]
    handles.append(Patch(facecolor="0.85", edgecolor="0.5", label="nodata"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.ticklabel_format(useOffset=False, style="plain")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")  # keep the outside legend and tick labels
    plt.close(fig)
    return p
