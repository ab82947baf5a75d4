#!/usr/bin/env python
"""Build ``data/archive/``: HLS v2.0-format COGs + aux COGs + a STAC catalog, from the real samples.

This is a *reformatting* of real sample data (see data/archive/PROVENANCE.md, written by this
script): the files follow HLS v2.0 naming, encoding and Fmask bits, but they are not HLS
products. Deterministic: the same samples give the same pixels, transforms and JSON.

    python scripts/build_archive.py                 # rebuild data/archive
    python scripts/build_archive.py --out /tmp/a --only HLS.L30.T31UDS.2018214T103930.v2.0
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from lssr_ray.data import hls, masks
from lssr_ray.data.blockgrid import block_phase, coarse_grid, to_blocks
from lssr_ray.data.cog import write_cog
from lssr_ray.data.landsat_l1 import open_scene
from lssr_ray.data.samples import sample_dir
from lssr_ray.data.worldcereal import open_nc, open_patch

ARCHIVE = REPO / "data" / "archive"
LANDCOVER_CSV = REPO / "lssr_ray" / "data" / "landcover_classes.csv"
FLANDERS_TILE = "31UDS"  # WorldCereal's tile for the patch (it also lies in 31UES's overlap strip)
NOTE = ("Reformatted from real sample data by lssr-ray scripts/build_archive.py; "
        "HLS v2.0 file format, not an HLS product")

#: Landsat-8 dates (UTC days) taken from the Flanders L8_SR_10m file: the six clear pairs of
#: the sample's PROVENANCE, plus clear 2018-10-05 and partly cloudy / partly filled dates
#: (2017-08-31, 2017-11-19 clouds and shadows; 2018-06-06 fill strip) to exercise masking.
L30_FLANDERS_DATES = ("2017-08-31", "2017-11-19", "2018-02-23", "2018-06-06", "2018-07-01",
                      "2018-07-17", "2018-07-24", "2018-08-02", "2018-10-05", "2018-10-21")
#: Sentinel-2 dates: the nearest S2 to each clear L8 date, plus partly cloudy 2018-06-13 and
#: 2018-08-14 (SCL clouds and shadows) and 2018-10-06.
S30_FLANDERS_DATES = ("2018-02-25", "2018-06-13", "2018-06-30", "2018-07-18", "2018-07-23",
                      "2018-08-02", "2018-08-14", "2018-10-06", "2018-10-21")
#: Sentinel-1 dates are the S1 acquisitions nearest to these L8 dates.
S1_NEAR_DATES = ("2018-02-23", "2018-07-01", "2018-07-24", "2018-08-02", "2018-10-21")
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
L8_SR_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07")
LONG_NAMES = {"B01": "Coastal_Aerosol", "B02": "Blue", "B03": "Green", "B04": "Red", "B05": "NIR",
              "B06": "SWIR1", "B07": "SWIR2", "B08": "NIR_Broad", "B8A": "NIR_Narrow",
              "B11": "SWIR1", "B12": "SWIR2", "Fmask": "Fmask"}
L30_S2_RED_EDGE = {"B05": "Red_Edge1", "B06": "Red_Edge2", "B07": "Red_Edge3"}


@dataclass
class Layer:
    """One COG to write: array (y, x), encoding and STAC band info."""

    key: str
    array: np.ndarray
    nodata: float | int | None
    transform: tuple
    scale: float | None = None
    description: str = ""
    roles: tuple[str, ...] = ("data",)
    common_name: str | None = None
    wavelength: float | None = None
    unit: str | None = None


@dataclass
class Product:
    """One STAC item: id, collection, time, CRS, the layers and where each came from."""

    id: str
    collection: str
    when: dt.datetime | None
    epsg: int
    layers: list[Layer]
    source: str
    how: str
    tags: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    window: tuple[dt.datetime, dt.datetime] | None = None
    filenames: dict = field(default_factory=dict)


def utc(ts) -> dt.datetime:
    """numpy datetime64 -> aware UTC datetime with whole seconds."""
    s = np.datetime_as_string(np.datetime64(ts, "s"))
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)


def dates_index(times, day: str) -> list[int]:
    return [i for i, t in enumerate(times) if np.datetime_as_string(t, unit="D") == day]


def nearest_index(times, day: str) -> int:
    target = np.datetime64(day + "T12:00:00")
    return int(np.argmin(np.abs(times.astype("datetime64[s]") - target)))


def fmask_layers(cloud, shadow, *, cirrus=None, snow=None, water=None, fill=None) -> np.ndarray:
    """HLS Fmask with bit 2 = 8-neighbour ring around cloud/shadow (HLS dilates its masks too)."""
    from scipy.ndimage import binary_dilation

    cs = np.asarray(cloud, bool) | np.asarray(shadow, bool)
    adjacent = binary_dilation(cs, structure=np.ones((3, 3), bool)) & ~cs
    return hls.encode_fmask(cirrus=cirrus, cloud=cloud, adjacent=adjacent, shadow=shadow,
                            snow=snow, water=water, fill=fill)


def cloud_cover(fmask: np.ndarray) -> float:
    f = hls.decode_fmask(fmask)
    valid = ~f["fill"]
    if not valid.any():
        return 100.0
    bad = (f["cloud"] | f["shadow"] | f["adjacent"]) & valid
    return round(100.0 * bad.sum() / valid.sum(), 2)


# ---------------------------------------------------------------- Flanders L30 (Landsat-8 SR)
def flanders_l30() -> list[Product]:
    folder = sample_dir("worldcereal_flanders_31UDS_2018")
    patch = open_patch(folder)
    raw = open_nc(patch.files["l8"], mask_and_scale=False)
    stack = np.stack([raw[b].values for b in L8_SR_BANDS + ("pixel_qa",)])  # (7, T, 64, 64)
    phase = block_phase(stack)
    py, px, score = phase.row, phase.col, phase.score
    if score < 1.0:
        raise RuntimeError(f"L8 10 m layer is not an exact 3x3 block copy (best phase score {score})")
    t10 = raw.rio.transform()
    t30, shape30, lead = coarse_grid(t10, stack.shape[-2:], (py, px))
    # Every block is constant, so the max over its covered pixels is the 30 m value.
    coarse = np.nanmax(to_blocks(stack.astype(np.float64), lead, shape30, fill=np.nan), axis=(-3, -1))
    coarse = coarse.astype(np.uint16)
    times = raw["timestamp"].values
    products = []
    for day in L30_FLANDERS_DATES:
        idx = dates_index(times, day)
        qa_all = coarse[-1][idx]
        order = sorted(idx, key=lambda i: int((coarse[-1][i] == 0).sum()))  # fewest fill first
        first = order[0]
        bands = coarse[:-1, first].copy()
        qa = coarse[-1, first].copy()
        for other in order[1:]:  # same overpass split over two scenes: fill gaps from the other
            gap = qa == 0
            bands[:, gap] = coarse[:-1, other][:, gap]
            qa[gap] = coarse[-1, other][gap]
        del qa_all
        d = masks.decode_pixel_qa(qa)
        fill = d["fill"]
        fm = fmask_layers(d["cloud"], d["shadow"], cirrus=d["cirrus_conf"] == 3, snow=d["snow"],
                          water=d["water"], fill=fill)
        when = utc(times[first])
        gid = hls.format_name("L30", FLANDERS_TILE, when)
        layers = []
        for b, arr in zip(L8_SR_BANDS, bands):
            dn = arr.view(np.int16).astype(np.int32)  # C1 SR is int16 stored as uint16 here
            bad = fill | (dn < hls.VALID_RANGE[0]) | (dn > hls.VALID_RANGE[1])
            dn = np.where(bad, hls.NODATA, dn).astype(np.int16)
            layers.append(Layer(b, dn, hls.NODATA, tuple(t30)[:6], hls.SCALE, LONG_NAMES[b],
                                common_name=_common("L30", b), wavelength=hls.WAVELENGTH_UM["L30"][b]))
        layers.append(Layer("Fmask", fm, hls.FMASK_FILL, tuple(t30)[:6], None, "Fmask", ("cloud", "metadata")))
        src_times = ", ".join(np.datetime_as_string(times[i], unit="s") for i in order)
        products.append(Product(
            gid, "HLSL30", when, 32631, layers, f"{folder.name}/{patch.files['l8'].name}",
            f"L8 SR timestamp(s) {src_times}; 10 m nearest-neighbour copy decimated to 30 m on the "
            f"recovered 3x3 block lattice (phase row {py}, col {px}); B02..B07 int16 "
            f"(uint16 values re-read as int16), outside {hls.VALID_RANGE} -> -9999; Fmask from pixel_qa",
            tags={"SENSOR": "OLI", "SPATIAL_COVERAGE": _coverage(fm)},
        ))
    return products


def _common(product: str, band: str) -> str | None:
    return {v: k for k, v in hls.BANDS[product].items()}.get(band)


def _coverage(fmask: np.ndarray) -> int:
    return round(100.0 * float((fmask != hls.FMASK_FILL).mean()))


def flanders_grid30():
    """The 30 m Landsat lattice of the Flanders patch (Affine, shape, lead) from the L8 layer."""
    patch = open_patch(sample_dir("worldcereal_flanders_31UDS_2018"))
    raw = open_nc(patch.files["l8"], mask_and_scale=False)
    stack = np.stack([raw[b].values for b in L8_SR_BANDS + ("pixel_qa",)])
    return coarse_grid(raw.rio.transform(), stack.shape[-2:], block_phase(stack).phase)


# ---------------------------------------------------------------- Flanders S30 + S2 reference
def _scl_bits(scl: np.ndarray) -> dict[str, np.ndarray]:
    s = np.asarray(scl)
    return {"cirrus": s == 10, "cloud": np.isin(s, (8, 9)), "shadow": s == 3, "snow": s == 11,
            "water": s == 6}


def flanders_s30_and_reference() -> list[Product]:
    import rasterio.warp
    from rasterio.enums import Resampling

    folder = sample_dir("worldcereal_flanders_31UDS_2018")
    patch = open_patch(folder)
    s10, s20 = patch.s2_10m, patch.s2_20m
    s10raw = open_nc(patch.files["s2_10m"], mask_and_scale=False)
    s20raw = open_nc(patch.files["s2_20m"], mask_and_scale=False)
    t10, t20 = s10.rio.transform(), s20.rio.transform()
    t30, shape30, lead = flanders_grid30()
    crs = s10.rio.crs
    times = s10["timestamp"].values
    if not np.array_equal(times, s20["timestamp"].values):
        raise RuntimeError("S2 10 m and 20 m files have different timestamps")
    out = []
    for day in S30_FLANDERS_DATES:
        (i,) = dates_index(times, day)
        when = utc(times[i])
        layers = []
        for b in S2_10M:
            refl = s10[b].values[i].astype(np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks -> NaN
                mean = np.nanmean(to_blocks(refl, lead, shape30), axis=(-3, -1))
            layers.append(Layer(b, hls.from_reflectance(mean), hls.NODATA, tuple(t30)[:6], hls.SCALE,
                                LONG_NAMES[b], common_name=_common("S30", b),
                                wavelength=hls.WAVELENGTH_UM["S30"][b]))
        for b in S2_20M:
            src = s20[b].values[i].astype(np.float32)
            dst = np.full(shape30, np.nan, np.float32)
            rasterio.warp.reproject(src, dst, src_transform=t20, src_crs=crs, dst_transform=t30,
                                    dst_crs=crs, resampling=Resampling.average,
                                    src_nodata=np.nan, dst_nodata=np.nan)
            layers.append(Layer(b, hls.from_reflectance(dst), hls.NODATA, tuple(t30)[:6], hls.SCALE,
                                L30_S2_RED_EDGE.get(b, LONG_NAMES[b]), common_name=_common("S30", b),
                                wavelength=hls.WAVELENGTH_UM["S30"][b]))
        scl = s20raw["SCL"].values[i]
        bits = {}
        for name, plane in _scl_bits(scl).items():
            dst = np.zeros(shape30, np.uint8)
            rasterio.warp.reproject(plane.astype(np.uint8), dst, src_transform=t20, src_crs=crs,
                                    dst_transform=t30, dst_crs=crs, resampling=Resampling.max)
            bits[name] = dst.astype(bool)
        fill = np.all([lyr.array == hls.NODATA for lyr in layers], axis=0)
        fm = fmask_layers(bits["cloud"], bits["shadow"], cirrus=bits["cirrus"], snow=bits["snow"],
                          water=bits["water"], fill=fill)
        layers.append(Layer("Fmask", fm, hls.FMASK_FILL, tuple(t30)[:6], None, "Fmask", ("cloud", "metadata")))
        gid = hls.format_name("S30", FLANDERS_TILE, when)
        stamp = np.datetime_as_string(times[i], unit="s")
        out.append(Product(
            gid, "HLSS30", when, 32631, layers,
            f"{folder.name}/{patch.files['s2_10m'].name} + {patch.files['s2_20m'].name}",
            f"S2 L2A timestamp {stamp}; 10 m bands: mean of covered 10 m pixels per 30 m cell; "
            "20 m bands: rasterio average resampling to the same 30 m lattice as L30; Fmask from SCL "
            "(3 shadow, 8/9 cloud, 10 cirrus, 11 snow, 6 water; any 20 m pixel flagged flags the cell)",
            tags={"SENSOR": "MSI", "SPATIAL_COVERAGE": _coverage(fm)},
        ))
        # Native-resolution S2 reference (the 10 m target for training / evaluation).
        ref = []
        for b in S2_10M:
            v = s10raw[b].values[i].astype(np.int32)
            ref.append(Layer(b, np.where(v == 0, hls.NODATA, v).astype(np.int16), hls.NODATA,
                             tuple(t10)[:6], hls.SCALE, LONG_NAMES[b], common_name=_common("S30", b),
                             wavelength=hls.WAVELENGTH_UM["S30"][b]))
        for b in S2_20M:
            v = s20raw[b].values[i].astype(np.int32)
            ref.append(Layer(b, np.where(v == 0, hls.NODATA, v).astype(np.int16), hls.NODATA,
                             tuple(t20)[:6], hls.SCALE, L30_S2_RED_EDGE.get(b, LONG_NAMES[b]),
                             common_name=_common("S30", b), wavelength=hls.WAVELENGTH_UM["S30"][b]))
        ref.append(Layer("SCL", scl.astype(np.uint8), 0, tuple(t20)[:6], None,
                         "Sen2Cor scene classification", ("cloud", "metadata")))
        out.append(Product(
            f"S2L2A.T{FLANDERS_TILE}.{when:%Y%m%dT%H%M%S}", "s2_reference", when, 32631, ref,
            f"{folder.name}/{patch.files['s2_10m'].name} + {patch.files['s2_20m'].name}",
            f"S2 L2A timestamp {stamp}; stored DN unchanged as int16 (0 -> -9999), native 10 m / 20 m grids",
        ))
    return out


# ---------------------------------------------------------------- Alabama L30 (Landsat-8 L1 TOA)
def alabama_l30() -> list[Product]:
    folder = sample_dir("landsat8_l1t_alabama_2015")
    scene = open_scene(folder)
    bqa, prof = scene.read_dn("BQA")
    epsg = prof["crs"].to_epsg()
    t = prof["transform"]
    h, w = bqa.shape
    bounds = (t.c, t.f + h * t.e, t.c + w * t.a, t.f)
    tiles = hls.mgrs_tiles(bounds, epsg)
    if not tiles:
        raise RuntimeError(f"no MGRS tile contains the Alabama crop {bounds}")
    tile = tiles[0]
    q = masks.decode_bqa_precollection(bqa)
    fill = q["fill"] | q["dropped"]
    fm = fmask_layers(q["cloud"] == 3, np.zeros_like(fill), cirrus=q["cirrus"] == 3,
                      snow=q["snow"] == 3, water=q["water"] == 3, fill=fill)
    layers = []
    for n in range(2, 8):  # B01 (coastal) left out to keep the archive small; not an LSSR band
        b = f"B{n:02d}"
        toa, _ = scene.read_toa(n)
        dn = hls.from_reflectance(toa)
        dn[fill] = hls.NODATA
        layers.append(Layer(b, dn, hls.NODATA, tuple(t)[:6], hls.SCALE, LONG_NAMES[b],
                            common_name=_common("L30", b), wavelength=hls.WAVELENGTH_UM["L30"][b]))
    layers.append(Layer("Fmask", fm, hls.FMASK_FILL, tuple(t)[:6], None, "Fmask", ("cloud", "metadata")))
    when = scene.mtl.acquired.replace(microsecond=0)
    return [Product(
        hls.format_name("L30", tile, when), "HLSL30", when, epsg, layers, f"{folder.name}/l8_B1..B7.tif, l8_BQA.tif, l8_MTL.txt",
        f"Landsat-8 L1T {scene.mtl.scene_id}: TOA reflectance (REFLECTANCE_MULT/ADD from the MTL, "
        f"/ sin(SUN_ELEVATION {scene.mtl.sun_elevation})), NOT surface reflectance; native 30 m grid; "
        f"MGRS tile {tile} computed from the crop bounds (candidates {tiles}); Fmask from the "
        "pre-collection BQA (confidence 'yes' for cloud/cirrus/snow/water; no shadow bit exists)",
        tags={"SENSOR": "OLI", "LANDSAT_SCENE_ID": scene.mtl.scene_id, "REFLECTANCE": "TOA",
              "SPATIAL_COVERAGE": _coverage(fm)},
        properties={"lssr:reflectance": "toa"},
    )]


# ---------------------------------------------------------------- aux layers
def _landcover_lut() -> dict[int, int]:
    with LANDCOVER_CSV.open() as fh:
        rows = [r for r in csv.DictReader(fh) if not r["index"].startswith("#")]
    return {int(r["code"]): int(r["index"]) for r in rows}


def _window(attrs) -> tuple[dt.datetime, dt.datetime]:
    s = dt.datetime.fromisoformat(str(attrs["start_date"])).replace(tzinfo=dt.UTC)
    e = dt.datetime.fromisoformat(str(attrs["end_date"])).replace(tzinfo=dt.UTC)
    return s, e


def aux_products() -> list[Product]:
    import rasterio

    lut = _landcover_lut()
    out = []
    sites = (("worldcereal_flanders_31UDS_2018", "31UDS"), ("worldcereal_tanzania_37MBS_2021", "37MBS"))
    for name, tile in sites:
        folder = sample_dir(name)
        patch = open_patch(folder)
        with rasterio.open(patch.files["dem"]) as src:
            dem = src.read(1, masked=True).astype(np.float32).filled(np.nan)
            epsg, tdem = src.crs.to_epsg(), src.transform
        labels = open_nc(patch.files["labels"], mask_and_scale=False)
        window = _window(labels.attrs) if "start_date" in labels.attrs else _window(
            open_nc(patch.files["s2_20m"], mask_and_scale=False).attrs)
        tl = tuple(labels.rio.transform())[:6]
        out.append(Product(
            f"dem_{tile}", "dem", None, epsg,
            [Layer("elevation", dem, float("nan"), tuple(tdem)[:6], None, "elevation", unit="m")],
            f"{folder.name}/{patch.files['dem'].name}", "int16 metres (nodata -32767) -> float32 metres, NaN missing",
            window=window))
        lc = labels["LC"].values.astype(np.int64)
        unknown = sorted(set(np.unique(lc).tolist()) - set(lut) - {0})
        if unknown:
            raise RuntimeError(f"LC codes {unknown} are not in {LANDCOVER_CSV.name}")
        idx = np.vectorize(lambda c: lut.get(int(c), 0))(lc).astype(np.uint8)
        out.append(Product(
            f"landcover_{tile}", "landcover", None, epsg,
            [Layer("landcover", idx, None, tl, None, "land-cover class index (landcover_classes.csv)")],
            f"{folder.name}/{patch.files['labels'].name}", "LC code -> class index via lssr_ray/data/landcover_classes.csv (0 = unknown)",
            window=window))
        out.append(Product(
            f"croptype_{tile}", "croptype", None, epsg,
            [Layer("croptype", labels["CT"].values.astype(np.uint16), 0, tl, None, "WorldCereal crop-type code")],
            f"{folder.name}/{patch.files['labels'].name}", "CT codes unchanged as uint16, 0 = no label",
            window=window))
    # Sentinel-1 for Flanders, the acquisitions nearest to a few L30 dates.
    folder = sample_dir("worldcereal_flanders_31UDS_2018")
    patch = open_patch(folder)
    s1 = patch.s1
    times = s1["timestamp"].values
    t20 = tuple(s1.rio.transform())[:6]
    for day in S1_NEAR_DATES:
        i = nearest_index(times, day)
        when = utc(times[i])
        lyr = [Layer(p, s1[p].values[i].astype(np.float32), float("nan"), t20, None, f"sigma0 {p}", unit="dB")
               for p in ("VV", "VH")]
        out.append(Product(
            f"S1_GRD_ASC.T{FLANDERS_TILE}.{when:%Y%m%dT%H%M%S}", "sentinel1", when, 32631, lyr,
            f"{folder.name}/{patch.files['s1'].name}",
            f"S1 timestamp {np.datetime_as_string(times[i], unit='s')} (nearest to L8 {day}); "
            "int32 x 1e-4 dB -> float32 dB, 0 -> NaN"))
    return out


# ---------------------------------------------------------------- writing
def _footprint(layer: Layer, epsg: int):
    from rasterio.warp import transform_geom

    a, _, c, _, e, f = layer.transform
    h, w = layer.array.shape
    x0, x1, y0, y1 = c, c + w * a, f + h * e, f
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    geom = transform_geom(f"EPSG:{epsg}", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]},
                          antimeridian_cutting=True, precision=7)
    geom = json.loads(json.dumps(geom))  # plain lists
    xs = [p[0] for p in geom["coordinates"][0]]
    ys = [p[1] for p in geom["coordinates"][0]]
    return geom, [min(xs), min(ys), max(xs), max(ys)]


def make_item(p: Product, out: Path):
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    folder = out / p.collection / p.id
    folder.mkdir(parents=True, exist_ok=True)
    main = p.layers[0]
    geom, bbox = _footprint(main, p.epsg)
    props = {"lssr:source": p.source, "lssr:derivation": p.how, "lssr:note": NOTE, **p.properties}
    if p.window:
        props["start_datetime"] = p.window[0].isoformat().replace("+00:00", "Z")
        props["end_datetime"] = p.window[1].isoformat().replace("+00:00", "Z")
    item = pystac.Item(p.id, geom, bbox, p.when, props, collection=p.collection)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = p.epsg
    proj.transform = [float(v) for v in main.transform]
    proj.shape = [int(main.array.shape[0]), int(main.array.shape[1])]
    item.properties["proj:epsg"] = p.epsg  # projection v1 name, kept for older readers
    fm = next((lyr for lyr in p.layers if lyr.key == "Fmask"), None)
    if fm is not None:
        EOExtension.ext(item, add_if_missing=True).cloud_cover = cloud_cover(fm.array)
    RasterExtension.add_to(item)
    tags = {"PRODUCT_ID": p.id, "NOTE": NOTE, "SOURCE": p.source, **p.tags}
    if p.when:
        tags["SENSING_TIME"] = p.when.isoformat().replace("+00:00", "Z")
    if p.collection.startswith("HLS"):
        tags["MGRS_TILE_ID"] = hls.parse_name(p.id).tile
        if fm is not None:
            tags["cloud_coverage"] = cloud_cover(fm.array)
    for lyr in p.layers:
        fname = hls.HLSName(**{**hls.parse_name(p.id).__dict__, "band": lyr.key}).filename() \
            if p.collection.startswith("HLS") else f"{p.id}.{lyr.key}.tif"
        write_cog(folder / fname, lyr.array, crs=f"EPSG:{p.epsg}", transform=lyr.transform, nodata=lyr.nodata,
                  scale=lyr.scale, description=lyr.description, tags=tags, unit=lyr.unit)
        asset = pystac.Asset(str(folder / fname), title=lyr.description,
                             media_type=pystac.MediaType.COG, roles=list(lyr.roles))
        item.add_asset(lyr.key, asset)
        if lyr.transform != main.transform or lyr.array.shape != main.array.shape:
            ap = ProjectionExtension.ext(asset, add_if_missing=True)
            ap.transform = [float(v) for v in lyr.transform]
            ap.shape = [int(lyr.array.shape[0]), int(lyr.array.shape[1])]
        res = abs(lyr.transform[0])
        nod = lyr.nodata
        if isinstance(nod, float) and np.isnan(nod):
            nod = "nan"
        rb = RasterBand.create(nodata=nod, data_type=DataType(lyr.array.dtype.name),
                               scale=lyr.scale, offset=0.0 if lyr.scale is not None else None,
                               spatial_resolution=res, unit=lyr.unit)
        RasterExtension.ext(asset, add_if_missing=True).bands = [rb]
        if lyr.common_name or lyr.wavelength:
            EOExtension.ext(asset, add_if_missing=True).bands = [Band.create(name=lyr.key, common_name=lyr.common_name,
                                                        center_wavelength=lyr.wavelength)]
    return item


COLLECTIONS = {
    "HLSL30": "HLS v2.0-format Landsat (L30) granules, 30 m, int16 x 1e-4 reflectance, Fmask",
    "HLSS30": "HLS v2.0-format Sentinel-2 (S30) granules, 30 m, int16 x 1e-4 reflectance, Fmask",
    "s2_reference": "Native Sentinel-2 L2A 10 m / 20 m reference bands (int16 x 1e-4) and SCL",
    "dem": "Elevation, float32 metres, NaN missing",
    "landcover": "Land-cover class index (uint8; lssr_ray/data/landcover_classes.csv; 0 unknown)",
    "sentinel1": "Sentinel-1 GRD ascending sigma0 VV/VH in dB, float32, NaN missing",
    "croptype": "WorldCereal crop-type codes rasterised from LPIS polygons (uint16, 0 = no label)",
}


def build(out: Path = ARCHIVE, *, only: set[str] | None = None) -> list:
    """Build the products (all, or ids in ``only``) into ``out`` with a catalog.json."""
    import pystac

    out = Path(out)
    products = flanders_l30() + flanders_s30_and_reference() + alabama_l30() + aux_products()
    if only:
        missing = set(only) - {p.id for p in products}
        if missing:
            raise SystemExit(f"unknown product ids {sorted(missing)}; valid: {sorted(p.id for p in products)}")
        products = [p for p in products if p.id in only]
    for coll in {p.collection for p in products}:
        shutil.rmtree(out / coll, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    catalog = pystac.Catalog("lssr-archive", "lssr-ray bundled archive: HLS v2.0-format granules and "
                             "aux layers reformatted from real sample data (see PROVENANCE.md)",
                             title="lssr-ray sample archive")
    items = [make_item(p, out) for p in products]
    for cid, desc in COLLECTIONS.items():
        coll_items = sorted((i for i in items if i.collection_id == cid), key=lambda i: i.id)
        if not coll_items:
            continue
        extent = pystac.Extent.from_items(coll_items)
        coll = pystac.Collection(cid, desc, extent, license="various", title=cid)
        for it in coll_items:
            coll.add_item(it)
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(out))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    write_provenance(out, products)
    return items


def write_provenance(out: Path, products: list[Product]) -> None:
    lines = [
        "# data/archive: HLS v2.0-format archive made from the real samples",
        "",
        "Everything here is written by `scripts/build_archive.py` from the files in `data/samples/`",
        "(see their PROVENANCE.md for origin and licenses). It is a **reformatting of real data, not",
        "real HLS products**: file names, int16 x 0.0001 reflectance with nodata -9999, the uint8 Fmask",
        "bit layout (255 fill) and one Cloud-Optimized GeoTIFF per band follow HLS v2.0, but no HLS",
        "processing (atmospheric correction of L1 data, BRDF/NBAR, bandpass adjustment, HLS Fmask) was",
        "applied. The STAC catalog is `catalog.json` (self-contained, relative hrefs).",
        "",
        "## How each collection was made",
        "- **HLSL30, Flanders (T31UDS)**: from `L8_SR_10m` (Landsat-8 Collection-1-style surface",
        "  reflectance that WorldCereal resampled to the 10 m patch grid by nearest neighbour). The 3x3",
        "  block phase is detected from the data (`lssr_ray.data.blockgrid.block_phase`, all bands and",
        "  dates: an exact block copy), the 30 m grid is built on it (22 x 22 pixels, origin",
        "  (501340, 5629690), one partial block on the west and north/south edges), and each block's",
        "  value is taken. Re-expanding by 3x3 reproduces the 10 m layer exactly (tests/data/test_archive.py).",
        "  The block edges fall at x, y = 10 (mod 30) m; USGS Level-1 UTM products (e.g. the Alabama",
        "  scene here) have pixel corners at 15 (mod 30) m, so this lattice is presumably the native",
        "  one shifted by 5 m, the closest a 10 m grid can hold. The uint16-stored SR values are re-read as int16 (negatives had",
        "  wrapped), values outside the HLS valid range (-100..16000) become -9999. Fmask from",
        "  `pixel_qa`: cloud (bit 5) -> bit 1, shadow (3) -> 3, snow (4) -> 4, water (2) -> 5, cirrus",
        "  confidence high -> 0, bit 2 = 8-neighbour ring around cloud/shadow, fill -> 255; aerosol",
        "  bits 6-7 are 0 (the source has no aerosol QA). The tile id is WorldCereal's 31UDS (the",
        "  patch also lies in the overlap strip of 31UES).",
        "- **HLSL30, Alabama**: from the Landsat-8 **Level-1T** scene LC80200392015216LGN00 (2015,",
        "  before HLS v2.0 existed). Bands are **top-of-atmosphere** reflectance from the MTL",
        "  coefficients, **not surface reflectance** like real L30. Native 30 m grid (EPSG:32616).",
        "  Bands B02..B07 only: B01 (coastal aerosol) is left out to keep the archive small.",
        "  The MGRS tile id is computed with `lssr_ray.data.hls.mgrs_tiles` (MGRS AA lettering,",
        "  109.8 km Sentinel-2 tile extents; no `mgrs` package is installed): the crop lies wholly in",
        "  16RDV (it straddles the 16RDU/16RDV 100 km square boundary at northing 3400000, and only",
        "  the 16RDV tile, which extends 9.8 km south, contains all of it). Fmask from the",
        "  pre-collection BQA: confidence 'yes' (3) for cloud -> bit 1, cirrus -> 0, snow -> 4,",
        "  water -> 5; there is no shadow flag. The pre-collection cirrus flag is high over about a",
        "  third of the crop; HLS v2.0 lists bit 0 as reserved, and the default clear-sky mask",
        "  (`lssr_ray.data.masks.clear_from_fmask`) ignores it.",
        "- **HLSS30, Flanders**: from `S2_L2A_10m` + `S2_L2A_20m` on the same 30 m lattice as the",
        "  Flanders L30: 10 m bands (B02, B03, B04, B08) = mean of the covered 10 m pixels of each",
        "  3x3 block; 20 m bands (B05, B06, B07, B8A, B11, B12) = rasterio `average` resampling;",
        "  Fmask from SCL (3 -> shadow, 8/9 -> cloud, 10 -> cirrus, 11 -> snow, 6 -> water, any",
        "  overlapping 20 m pixel flags the cell; bit 2 as above). No bandpass adjustment to OLI.",
        "- **s2_reference**: the native S2 L2A stored integers as int16 COGs (0 -> -9999) on their",
        "  own 10 m and 20 m grids, plus SCL (uint8, 0 = nodata), for the S30 dates.",
        "- **dem**: `dem_31UDS.tif` and `dem_37MBS.tif`, int16 metres -> float32 metres, NaN missing.",
        "- **landcover**: OUTPUT_POLY `LC` codes mapped to class indices of",
        "  `lssr_ray/data/landcover_classes.csv` (0 = unknown / no label).",
        "- **croptype**: OUTPUT_POLY `CT` codes unchanged (uint16, 0 = no label).",
        "- **sentinel1**: `S1_GRD-ASCENDING_20m` VV/VH for the acquisitions nearest to five L30",
        "  dates, int32 x 1e-4 dB -> float32 dB, NaN missing.",
        "",
        "Licenses follow the sources: Landsat (USGS, public domain), Copernicus Sentinel data",
        "(\"Contains modified Copernicus Sentinel data 2017-2018\"), WorldCereal test files (MIT).",
        "",
        "## Items",
        "| item | collection | source | derivation |",
        "|---|---|---|---|",
    ]
    for p in sorted(products, key=lambda p: (p.collection, p.id)):
        lines.append(f"| `{p.id}` | {p.collection} | `{p.source}` | {p.how} |")
    (out / "PROVENANCE.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ARCHIVE, help="output folder (default data/archive)")
    ap.add_argument("--only", nargs="*", help="build only these item ids")
    args = ap.parse_args(argv)
    items = build(args.out, only=set(args.only) if args.only else None)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"wrote {len(items)} items to {args.out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
