"""The 30 m <-> 10 m block lattice: which 10 m pixels make up each 30 m cell.

A 10 m raster made by nearest-neighbour copying of a 30 m raster is a mosaic of ``SCALE`` x
``SCALE`` blocks of equal pixels. Its *phase* ``(row, col)`` is the 10 m pixel where the first
whole block starts (:func:`block_phase`). From the phase follow the coarse (30 m) grid over the
raster (:func:`coarse_grid`; when the phase is not 0 the first cell is only partly inside:
``lead`` 10 m pixels lie above/left of the raster), the block view used to summarise each cell
(:func:`to_blocks`) and its inverse (:func:`expand_blocks`). The WorldCereal readers, the pairs
converter and the crop-type features all use this one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from lssr_ray.config import SCALE
from lssr_ray.errors import ConfigError


@dataclass(frozen=True)
class BlockPhase:
    """Where the blocks of a nearest-neighbour copy start, and how clearly."""

    row: int
    """10 m row (0..factor-1) of the first whole block."""
    col: int
    """10 m column (0..factor-1) of the first whole block."""
    score: float
    """At this phase, the fraction of whole blocks (per leading layer, blocks with a non-finite
    pixel left out) whose pixels are all equal; 1.0 = an exact block copy, NaN = no block."""
    runner_up: float
    """The best score of any other phase (NaN if none): near 1 means the phase is ambiguous
    (e.g. a constant layer)."""

    @property
    def phase(self) -> tuple[int, int]:
        return (self.row, self.col)

    def require(self, what: str, *, min_score: float = 0.95, max_runner_up: float = 0.5) -> BlockPhase:
        """This phase, or :class:`ConfigError` when ``what`` is not a clear block copy."""
        if not (self.score >= min_score and not self.runner_up > max_runner_up):
            raise ConfigError(
                f"{what} is not a nearest-neighbour copy of a 30 m grid (block agreement "
                f"{self.score:.3f} at phase {self.phase}, {self.runner_up:.3f} at the next best; "
                f"need >= {min_score} and <= {max_runner_up}); cannot recover the 30 m cells"
            )
        return self


def _phase_score(a: np.ndarray, py: int, px: int, factor: int) -> float:
    """Score of phase (py, px) on (L, y, x) data, as in :attr:`BlockPhase.score`."""
    by, bx = (a.shape[-2] - py) // factor, (a.shape[-1] - px) // factor
    if by < 1 or bx < 1:
        return float("nan")
    blk = a[:, py:py + by * factor, px:px + bx * factor].reshape(a.shape[0], by, factor, bx, factor)
    equal = (blk == blk[:, :, :1, :, :1]).all(axis=(2, 4))
    if np.issubdtype(a.dtype, np.floating):
        valid = np.isfinite(blk).all(axis=(2, 4))
        return float(equal[valid].mean()) if valid.any() else float("nan")
    return float(equal.mean())


def block_phase(layers: np.ndarray, *, factor: int = SCALE) -> BlockPhase:
    """Find where the ``factor`` x ``factor`` blocks of a nearest-neighbour-upsampled raster start.

    ``layers`` is (..., y, x), integer or float (NaN/inf pixels, e.g. cloud-masked reflectance,
    leave their blocks out). Every phase in 0..factor-1 along each axis is scored
    (:attr:`BlockPhase.score`); the first best phase in row-major order wins.
    """
    a = np.asarray(layers)
    a = a.reshape((-1,) + a.shape[-2:])
    scores = {(py, px): _phase_score(a, py, px, factor) for py in range(factor) for px in range(factor)}
    finite = {p: s for p, s in scores.items() if not np.isnan(s)}
    if not finite:
        return BlockPhase(0, 0, float("nan"), float("nan"))
    best = max(finite, key=lambda p: (finite[p], -p[0], -p[1]))
    others = [s for p, s in finite.items() if p != best]
    return BlockPhase(best[0], best[1], finite[best], max(others) if others else float("nan"))


class CoarseGrid(NamedTuple):
    """The 30 m grid over a 10 m raster, from a block phase."""

    transform: Affine
    """Affine of the coarse grid (its first cell may start outside the fine raster)."""
    shape: tuple[int, int]
    """(rows, cols) of coarse cells covering every fine pixel."""
    lead: tuple[int, int]
    """(rows, cols) of 10 m pixels of the first coarse cell above/left of the fine raster."""


def coarse_grid(transform: Affine, shape: tuple[int, int], phase: tuple[int, int], *,
                factor: int = SCALE) -> CoarseGrid:
    """The coarse grid implied by a block phase of a fine raster (``transform``, ``shape``).

    Blocks start at fine pixel ``phase``; every fine pixel falls in exactly one coarse cell and
    the coarse grid's edges sit on fine-pixel edges: the fine GeoBox shifted back by the lead,
    extended to whole cells and zoomed out by ``factor``.
    """
    py, px = phase
    lead_y, lead_x = (factor - py) % factor, (factor - px) % factor
    rows = -(-(shape[0] + lead_y) // factor)
    cols = -(-(shape[1] + lead_x) // factor)
    fine = GeoBox(shape, transform, None)
    coarse = fine.translate_pix(-lead_x, -lead_y).crop((rows * factor, cols * factor)).zoom_out(factor)
    return CoarseGrid(coarse.affine, coarse.shape.yx, (lead_y, lead_x))


def whole_cells(shape: tuple[int, int], phase: tuple[int, int], *, factor: int = SCALE) -> tuple[int, int]:
    """(rows, cols) of coarse cells lying wholly inside a fine raster of ``shape`` at ``phase``."""
    return (shape[0] - phase[0]) // factor, (shape[1] - phase[1]) // factor


def to_blocks(fine: np.ndarray, lead: tuple[int, int], coarse_shape: tuple[int, int], *, factor: int = SCALE,
              fill: float = np.nan) -> np.ndarray:
    """Pad (..., y, x) onto the coarse lattice -> (..., rows, factor, cols, factor) blocks.

    Pixels outside the fine raster are ``fill`` (the result is float64 unless fine is float).
    """
    a = np.asarray(fine)
    rows, cols = coarse_shape
    ly, lx = lead
    out_dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
    pad = np.full(a.shape[:-2] + (rows * factor, cols * factor), fill, dtype=out_dtype)
    pad[..., ly:ly + a.shape[-2], lx:lx + a.shape[-1]] = a
    return pad.reshape(a.shape[:-2] + (rows, factor, cols, factor))


def expand_blocks(coarse: np.ndarray, lead: tuple[int, int], fine_shape: tuple[int, int], *,
                  factor: int = SCALE) -> np.ndarray:
    """Inverse of block decimation: repeat each coarse pixel factor x factor and crop to the
    fine raster (used to check that a recovered 30 m grid reproduces the 10 m layer)."""
    rep = np.repeat(np.repeat(np.asarray(coarse), factor, axis=-2), factor, axis=-1)
    ly, lx = lead
    return rep[..., ly:ly + fine_shape[0], lx:lx + fine_shape[1]]


__all__ = ["SCALE", "BlockPhase", "CoarseGrid", "block_phase", "coarse_grid", "expand_blocks", "to_blocks",
           "whole_cells"]
