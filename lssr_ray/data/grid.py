"""AOI -> output grid -> chip plan. Pure geometry: no raster I/O.

The *input grid* is a 30 m grid in the AOI's UTM CRS whose pixel edges sit on the source
granules' 30 m lattice (``anchor``; HLS/Landsat grids may be at 15 m offsets). The *output
grid* shares its origin and has ``scale`` (3) times finer pixels, so every input pixel maps to
exactly 3x3 output pixels. The grid is padded to a whole number of chip strides so that chip
cores tile it exactly and each core is one output Zarr chunk of ``stride*scale`` pixels.

All grid arithmetic is odc-geo's: the grid is ``GeoBox.from_bbox(..., anchor=...)`` padded with
``pad_wh`` to whole strides, the 10 m grid is ``zoom_to`` of the 30 m one, chip cores are the
``GeoboxTiles`` of the grid that touch the AOI (``tiles(polygon)``) and a chip is its core
``pad``-ed by the halo. The classes below only name and cache what those calls give.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from affine import Affine
from odc.geo import xy_
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.geom import Geometry

from lssr_ray.config import SCALE, GridConfig
from lssr_ray.errors import ConfigError

Window = tuple[int, int, int, int]
"""A pixel window ``(row_off, col_off, height, width)``; offsets may be negative (halo off-grid)."""


@dataclass(frozen=True)
class OutputGrid:
    """The input (30 m) and output (10 m) grids of one AOI in a UTM CRS, north-up."""

    crs: str
    """UTM CRS, e.g. ``"EPSG:32631"``."""
    input_transform: Affine
    """Affine of the 30 m input grid (top-left corner origin, metres)."""
    input_shape: tuple[int, int]
    """(height, width) of the input grid in input pixels; multiples of the chip stride."""
    scale: int = SCALE
    """Output pixels per input pixel along each axis."""

    @functools.cached_property
    def input_geobox(self) -> GeoBox:
        """The 30 m grid as an odc-geo GeoBox."""
        return GeoBox(self.input_shape, self.input_transform, self.crs)

    @functools.cached_property
    def output_geobox(self) -> GeoBox:
        """The 10 m grid: the 30 m GeoBox zoomed to ``scale`` times as many pixels (same origin)."""
        return self.input_geobox.zoom_to(self.output_shape)

    @property
    def input_resolution(self) -> float:
        """Input pixel size in metres."""
        return float(self.input_transform.a)

    @property
    def output_resolution(self) -> float:
        """Output pixel size in metres."""
        return self.input_resolution / self.scale

    @property
    def output_transform(self) -> Affine:
        """Affine of the 10 m output grid: same origin as the input grid."""
        return self.output_geobox.affine

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the output grid in output pixels."""
        return (self.input_shape[0] * self.scale, self.input_shape[1] * self.scale)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in metres of :attr:`crs`."""
        return tuple(self.input_geobox.boundingbox.bbox)

    @property
    def area_km2(self) -> float:
        """Area of the whole (padded) grid in km²."""
        left, bottom, right, top = self.bounds
        return (right - left) * (top - bottom) / 1e6

    def window_geobox(self, window: Window) -> GeoBox:
        """GeoBox of an input-grid window (offsets may be negative: a halo off the grid)."""
        row, col, h, w = window
        return self.input_geobox.translate_pix(col, row).crop((h, w))

    def geobox(self, *, output: bool = True) -> GeoBox:
        """The grid as an :class:`odc.geo.geobox.GeoBox` (output grid by default)."""
        return self.output_geobox if output else self.input_geobox


@dataclass(frozen=True)
class Chip:
    """One chip: what the model sees (core + halo), on both grids."""

    id: str
    """Stable id ``"r{row:04d}c{col:04d}"`` on the grid's chip lattice."""
    row: int
    """Chip lattice row (0 at the grid's top)."""
    col: int
    """Chip lattice column (0 at the grid's left)."""
    input_window: Window
    """Window on the 30 m input grid including the halo (chip_size x chip_size input px)."""
    input_transform: Affine
    """Affine of the chip's 30 m array (its top-left pixel corner)."""
    output_window: Window
    """Window on the 10 m output grid including the halo (chip_size*scale px square)."""
    output_transform: Affine
    """Affine of the chip's 10 m array."""
    core_window: Window
    """Output-grid window of the core (chip minus halo) = exactly one output Zarr chunk."""
    core_offset: int
    """Offset of the core inside the chip's 10 m array, in output pixels (halo*scale)."""

    @property
    def input_shape(self) -> tuple[int, int]:
        """(h, w) of the chip's 30 m array."""
        return (self.input_window[2], self.input_window[3])

    @property
    def output_shape(self) -> tuple[int, int]:
        """(h, w) of the chip's 10 m array."""
        return (self.output_window[2], self.output_window[3])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the chip including halo, metres in the grid CRS."""
        return tuple(GeoBox(self.input_shape, self.input_transform, None).boundingbox.bbox)


@dataclass(frozen=True)
class ChipPlan:
    """All chips of an AOI that touch it, on one output grid."""

    grid: OutputGrid
    """The output grid the chips live on."""
    chips: tuple[Chip, ...]
    """Chips whose core intersects the AOI, row-major by (row, col)."""
    config: GridConfig
    """Grid settings used (chip size, overlap, resolutions)."""
    aoi_area_km2: float
    """AOI area in km² (UTM)."""
    lattice_shape: tuple[int, int]
    """(rows, cols) of the full chip lattice covering the grid."""

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, chip_id: str) -> Chip:
        for c in self.chips:
            if c.id == chip_id:
                return c
        raise KeyError(f"no chip {chip_id!r} in plan; first ids: {[c.id for c in self.chips[:5]]}")

    @property
    def chunk_size(self) -> int:
        """Output Zarr chunk edge in output pixels (= core size = stride*scale)."""
        return self.config.stride * self.grid.scale

    def summary(self) -> str:
        """A printable multi-line summary (chips, grid shape, CRS, km²)."""
        g = self.grid
        left, bottom, right, top = g.bounds
        return "\n".join(
            [
                (f"chip plan: {len(self.chips)} chips of {self.config.chip_size} px (30 m) "
                 f"with overlap {self.config.overlap}, core {self.config.stride} px "
                 f"-> {self.chunk_size} px chunks at {g.output_resolution:g} m"),
                (f"  CRS {g.crs}  input grid {g.input_shape[0]}x{g.input_shape[1]} @ {g.input_resolution:g} m"
                 f"  output grid {g.output_shape[0]}x{g.output_shape[1]} @ {g.output_resolution:g} m"),
                (f"  bounds ({left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f})  grid {g.area_km2:.2f} km2"
                 f"  AOI {self.aoi_area_km2:.2f} km2  lattice {self.lattice_shape[0]}x{self.lattice_shape[1]}"),
            ]
        )

    def __str__(self) -> str:
        return self.summary()


def anchor_of(transform: Affine) -> tuple[float, float]:
    """The lattice anchor (x0 mod res, y0 mod res) of a north-up source grid transform."""
    if transform.b or transform.d or transform.e >= 0:
        raise ConfigError(f"source grid must be north-up with no rotation, got {tuple(transform)[:6]}")
    return (transform.c % transform.a, transform.f % -transform.e)


def make_grid(
    utm_bounds: tuple[float, float, float, float],
    crs: str,
    *,
    config: GridConfig | None = None,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> OutputGrid:
    """Build the grid covering ``utm_bounds`` (metres in ``crs``).

    ``anchor`` is a point of the source granules' 30 m lattice (see :func:`anchor_of`); the
    default snaps to multiples of the input resolution. Bounds are expanded outwards to that
    lattice (no tolerance: a bound a hair past a lattice line takes one more pixel), then the
    shape is rounded up to whole chip strides (extra rows/cols at the bottom/right) so chip cores
    tile the grid.
    """
    config = config or GridConfig()
    res = config.input_resolution
    snap = xy_(anchor[0] / res, anchor[1] / res)  # odc-geo anchors are pixel fractions
    gbox = GeoBox.from_bbox(utm_bounds, crs, resolution=res, anchor=snap, tol=0.0).pad_wh(config.stride)
    return OutputGrid(crs=crs, input_transform=gbox.affine, input_shape=gbox.shape.yx, scale=config.scale)


def _chip(grid: OutputGrid, tiles: GeoboxTiles, idx: tuple[int, int], config: GridConfig) -> Chip:
    """The chip of core tile ``idx``: the core padded by the halo on each side, on both grids."""
    k, halo = grid.scale, config.overlap // 2
    core_rows, core_cols = tiles.roi[idx]
    iw = (core_rows.start - halo, core_cols.start - halo, config.chip_size, config.chip_size)
    ow = (iw[0] * k, iw[1] * k, iw[2] * k, iw[3] * k)
    chip_in = grid.window_geobox(iw)  # = tiles[idx].pad(halo), with one affine product instead of two
    core_h, core_w = core_rows.stop - core_rows.start, core_cols.stop - core_cols.start
    return Chip(
        id=f"r{idx[0]:04d}c{idx[1]:04d}",
        row=idx[0],
        col=idx[1],
        input_window=iw,
        input_transform=chip_in.affine,
        output_window=ow,
        output_transform=chip_in.zoom_to((ow[2], ow[3])).affine,
        core_window=(core_rows.start * k, core_cols.start * k, core_h * k, core_w * k),
        core_offset=halo * k,
    )


def plan_chips(aoi: Any, *, config: GridConfig | None = None, anchor: tuple[float, float] = (0.0, 0.0)) -> ChipPlan:
    """Grid + chips for an :class:`~lssr_ray.data.aoi.AOI` (chips whose core touches the AOI).

    ``config`` defaults to ``GridConfig()``; ``anchor`` as in :func:`make_grid`. The chip cores
    are the stride x stride tiles of the grid (``GeoboxTiles``) that intersect the AOI, row-major.
    """
    config = config or GridConfig()
    grid = make_grid(aoi.utm_geometry.bounds, aoi.crs, config=config, anchor=anchor)
    tiles = GeoboxTiles(grid.input_geobox, (config.stride, config.stride))
    touched = tiles.tiles(Geometry(aoi.utm_geometry, grid.crs))
    chips = tuple(_chip(grid, tiles, idx, config) for idx in sorted(touched))
    return ChipPlan(grid=grid, chips=chips, config=config, aoi_area_km2=aoi.area_km2,
                    lattice_shape=tiles.shape.yx)


def union_window(windows: list[Window]) -> Window:
    """Smallest window containing all ``windows`` (for block reads that serve many chips)."""
    r0 = min(w[0] for w in windows)
    c0 = min(w[1] for w in windows)
    r1 = max(w[0] + w[2] for w in windows)
    c1 = max(w[1] + w[3] for w in windows)
    return (r0, c0, r1 - r0, c1 - c0)


def group_chips(plan: ChipPlan, *, block: int = 4) -> list[tuple[Chip, ...]]:
    """Group chips into ``block`` x ``block`` lattice blocks (row-major) for one read per block."""
    if block < 1:
        raise ConfigError(f"block must be >= 1 chips, got {block}")
    groups: dict[tuple[int, int], list[Chip]] = {}
    for c in plan.chips:
        groups.setdefault((c.row // block, c.col // block), []).append(c)
    return [tuple(groups[k]) for k in sorted(groups)]


__all__ = [
    "Chip",
    "ChipPlan",
    "OutputGrid",
    "Window",
    "anchor_of",
    "group_chips",
    "make_grid",
    "plan_chips",
    "union_window",
]
