"""Quicklook PNGs per time step: 30 m input | bicubic 10 m | LSSR 10 m | trust layer.

The trust panel is the ``uncertainty`` layer (mean over the RGB bands) when the store has it
(``--uncertainty``), else the ``consistency`` layer (mean |value| over RGB); a store without
either shows three panels.

Memory is bounded: at most ``max_px`` x ``max_px`` output pixels (a window centred on the
grid) are read, whatever the region's size, from the store opened without dask
(:func:`~lssr_ray.mapping.views.open_windowed`: no dask array of one key per chunk and variable
is built for a window of a few chunks).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lssr_ray.config import SCALE

QUICKLOOK_MAX_PX = 768
"""Default window edge in 10 m pixels: each panel is drawn ~500 px wide, so a larger window only
downsamples more, while the driver's memory grows with its area: :func:`render` peaked at 495 MiB
for a 1536 px window and 286 MiB for 768 px (matplotlib included; ~117 B per window pixel), the
growth ``bench/memory_flat.py`` saw in the driver's finalize phase between 16 and 256 chips."""


def _window(grid: Any, max_px: int) -> tuple[int, int, int, int]:
    """Centred input-grid window (row, col, h, w) whose 10 m extent is at most max_px."""
    k = grid.scale
    h, w = grid.input_shape
    mh, mw = min(h, max_px // k), min(w, max_px // k)
    return ((h - mh) // 2, (w - mw) // 2, mh, mw)


def _data_box(rgb10: np.ndarray, k: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) in 30 m cells of the smallest whole-cell box holding every finite
    10 m pixel of ``rgb10`` (3, H, W); the full window when nothing is finite."""
    h, w = rgb10.shape[-2] // k, rgb10.shape[-1] // k
    finite = np.isfinite(rgb10).any(axis=0)
    if not finite.any():
        return 0, h, 0, w
    rows, cols = np.flatnonzero(finite.any(axis=1)), np.flatnonzero(finite.any(axis=0))
    return rows[0] // k, min(h, rows[-1] // k + 1), cols[0] // k, min(w, cols[-1] // k + 1)


def input_rgb(grid: Any, granules: Sequence[Any], window: tuple[int, int, int, int]) -> np.ndarray:
    """30 m RGB reflectance (3, h, w) over ``window``: first clear value over ``granules``, NaN else."""
    from lssr_ray.data.readers import read_lowres
    from lssr_ray.errors import LssrError, StorageUnreachableError

    rgb = np.full((3, window[2], window[3]), np.nan, np.float32)
    for g in granules:
        try:
            lr = read_lowres(g, grid, window=window).lr[:3]
        except StorageUnreachableError:
            raise
        except LssrError:
            continue  # a corrupt granule was a recorded skip; show what else there is
        rgb = np.where(np.isfinite(rgb), rgb, lr)
    return rgb


def _stretch(rgb: np.ndarray, lo: float, hi: float) -> np.ndarray:
    img = np.clip((np.moveaxis(rgb, 0, -1) - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.where(np.isfinite(img), img, 0.5)  # nodata / cloud shown grey


def bicubic_rgb(rgb30: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """(3, h, w) 30 m reflectance -> (3, scale*h, scale*w) by the project's bicubic
    (:func:`lssr_ray.infer.bicubic_engine.bicubic_upsample`, the floor LSSR must beat)."""
    import torch

    from lssr_ray.infer.bicubic_engine import bicubic_upsample

    rgb30 = np.asarray(rgb30, np.float32)
    ok = np.isfinite(rgb30)
    # NaN would spread over the kernel's reach: fill it, then put NaN back on the 3x3 children of
    # invalid 30 m pixels (as the model's postprocess does), so the panels share one footprint
    fill = float(np.nanmean(rgb30)) if ok.any() else 0.0
    a = torch.from_numpy(np.ascontiguousarray(np.where(ok, rgb30, fill)))[None]
    up = bicubic_upsample(a, scale=scale).numpy()[0]
    return np.where(ok.repeat(scale, -2).repeat(scale, -1), up, np.nan).astype(np.float32)


def render(rgb30: np.ndarray, rgb10: np.ndarray, *, title: str = "", trust: np.ndarray | None = None,
           trust_name: str = "uncertainty") -> tuple[bytes, list[str]]:
    """(PNG bytes, panel titles): input (3, h, w) at 30 m | its bicubic x3 | the output
    (3, 3h, 3w) at 10 m, one stretch for the three, then ``trust`` (3h, 3w) when given, with
    its own colour bar (reflectance units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = rgb30[np.isfinite(rgb30)]
    if finite.size == 0:
        finite = rgb10[np.isfinite(rgb10)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 0.3))
    scale = rgb10.shape[-1] // max(1, rgb30.shape[-1])
    panels = [(rgb30, "input 30 m"), (bicubic_rgb(rgb30, scale), "bicubic 10 m"), (rgb10, "LSSR 10 m")]
    n = len(panels) + (trust is not None)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 5.4), dpi=100)
    titles = []
    for ax, (img, name) in zip(axes, panels):
        ax.imshow(_stretch(img, float(lo), float(hi)), interpolation="nearest")
        titles.append(f"{name} ({img.shape[2]} x {img.shape[1]} px)")
    if trust is not None:
        t = np.asarray(trust, np.float32)
        vals = t[np.isfinite(t)]
        cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.5")  # nodata grey, as in the RGB panels
        im = axes[-1].imshow(np.ma.masked_invalid(t), cmap=cmap, interpolation="nearest", vmin=0.0,
                             vmax=float(np.percentile(vals, 98)) if vals.size else 0.01)
        fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.02, label="reflectance")
        titles.append(f"{trust_name} 10 m (RGB mean)")
    for ax, name in zip(axes, titles):
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue(), titles


def trust_rgb(ds: Any, ti: int, ys: slice, xs: slice) -> tuple[np.ndarray | None, str]:
    """(trust map (H, W) or None, its name) for the quicklook: the RGB mean of ``uncertainty``,
    else the RGB mean of |``consistency``|, else None."""
    import warnings

    from lssr_ray.mapping.trust_layers import CONSISTENCY_VAR, UNCERTAINTY_VAR
    from lssr_ray.mapping.views import read_window

    for name in (UNCERTAINTY_VAR, CONSISTENCY_VAR):
        if name in ds:
            a = np.abs(np.asarray(read_window(ds[name], time=int(ti), band=[0, 1, 2], y=ys, x=xs).values, np.float32))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                return np.nanmean(a, axis=0), ("|consistency|" if name == CONSISTENCY_VAR else name)
    return None, ""


def write_quicklooks(
    store: str,
    grid: Any,
    granules_by_time: Mapping[int, Sequence[Any]],
    *,
    labels: Mapping[int, str] | None = None,
    out: str | None = None,
    max_px: int = QUICKLOOK_MAX_PX,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write one PNG per time index of ``granules_by_time``; returns their paths/URLs.

    Args:
        store: the finished output store.
        grid: the run's :class:`~lssr_ray.data.grid.OutputGrid`.
        granules_by_time: ``{ti: granules}`` shown as the 30 m input of time step ``ti``.
        labels: ``{ti: "2018-07-01"}`` for titles and file names.
        out: folder for the PNGs (default ``<store without .zarr>_quicklook``, local or s3://).
        max_px: largest output window edge read, pixels.
    """
    from lssr_ray.fileio import atomic_put, join
    from lssr_ray.mapping.views import open_windowed, read_window

    labels = dict(labels or {})
    out = out or str(store).rstrip("/").removesuffix(".zarr") + "_quicklook"
    win = _window(grid, max_px)
    k = grid.scale
    ds = open_windowed(store, storage_options)
    paths = []
    for ti, grans in sorted(granules_by_time.items()):
        rgb30 = input_rgb(grid, grans, win)
        ys, xs = slice(win[0] * k, (win[0] + win[2]) * k), slice(win[1] * k, (win[1] + win[3]) * k)
        rgb10 = np.asarray(read_window(ds["reflectance"], time=int(ti), band=[0, 1, 2], y=ys, x=xs).values, np.float32)
        trust, trust_name = trust_rgb(ds, int(ti), ys, xs)
        box = _data_box(rgb10, k)  # show where there is data, not a mostly empty window
        rgb30 = rgb30[:, box[0]:box[1], box[2]:box[3]]
        ys10, xs10 = slice(box[0] * k, box[1] * k), slice(box[2] * k, box[3] * k)
        rgb10 = rgb10[:, ys10, xs10]
        trust = None if trust is None else trust[..., ys10, xs10]
        label = labels.get(ti, f"t{ti}")
        png, _ = render(rgb30, rgb10, title=f"{label}  {grid.crs}", trust=trust, trust_name=trust_name)
        url = join(out, f"t{int(ti):04d}_{label}.png")
        atomic_put(url, png, storage_options)
        paths.append(url)
    return paths


__all__ = ["QUICKLOOK_MAX_PX", "bicubic_rgb", "input_rgb", "render", "trust_rgb", "write_quicklooks"]
