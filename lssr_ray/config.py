"""Frozen configuration dataclasses shared by jobs, Ray workers and the library.

Jobs parse arguments into one of these and pass it down; across Ray, send
``dataclasses.asdict(cfg)`` and rebuild with ``Cls.from_dict``. Every field has a unit.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar

from lssr_ray.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Repository root (where ``data/``, ``configs/`` and ``examples/`` live in a source checkout)."""
#: The shipped default LSSR: adapters (jobs/train.py --config configs/train_cpu_v3.yaml) and the
#: stand-in base they were trained on (scripts/make_small_base.py --preset v3). Mapping, the
#: crop-type ``lssr`` source and the demo use these unless told otherwise.
DEFAULT_BASE_DIR = REPO_ROOT / "models" / "small-sd-base-v3"
DEFAULT_CHECKPOINT_DIR = REPO_ROOT / "models" / "lssr-adapters-cpu-v3"
#: The small SD-architecture stand-in base the tests and the first checkpoints use
#: (scripts/make_small_base.py, no preset).
SMALL_BASE_DIR = REPO_ROOT / "models" / "small-sd-base"
#: The residual-CNN baseline evaluated beside LSSR (scripts/train_baseline_cnn.py).
BASELINE_CNN_DIR = REPO_ROOT / "models" / "baseline-cnn"
#: The bundled crop-type classifier of the mapping job's classify stage (jobs/train_classifier.py).
CROP_CLASSIFIER_DIR = REPO_ROOT / "models" / "croptype-lgbm"

SCALE = 3
"""The super-resolution factor: one 30 m input pixel is exactly SCALE x SCALE 10 m output pixels.
(Not :data:`lssr_ray.data.hls.SCALE`, the reflectance scale of HLS digital numbers.)"""
ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "tensorrt", "bicubic")
"""Inference engines a mapping run can ask for (``auto`` picks the best installed)."""
DATE_MODES: tuple[str, ...] = ("all", "clearest")
"""How a mapping run turns acquisitions into time steps."""
ASSET_ACCESS: tuple[str, ...] = ("https", "s3")
"""Which of a real HLS item's twin assets the readers get: ``https`` (``B04``) or ``s3``
(``s3_B04``, direct S3, us-west-2 only; the plain asset where an item has no twin)."""


def portable_ref(ref: Any, *, root: Path | None = None) -> str:
    """How a path or URI is recorded in outputs and run identities: never an absolute local path.

    A URI (``s3://...``) is kept; a local path inside the checkout (``root``, default
    :data:`REPO_ROOT`) becomes its relative POSIX path (``data/archive/catalog.json``), so the
    record is the same wherever the checkout lives; any other local path is recorded by its name,
    plus the sha256 (16 hex) of its bytes when it is a file, so that two different files of one
    name are not taken for each other.
    """
    import hashlib

    s = str(ref)
    if "://" in s and not s.startswith("file://"):
        return s
    p = Path(s.removeprefix("file://")).expanduser().resolve()
    base = (root or REPO_ROOT).resolve()
    if p.is_relative_to(base):
        return p.relative_to(base).as_posix()
    if p.is_file():
        return f"{p.name}@sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
    return p.name

#: Band groups the model super-resolves; each is one 3-channel image through the frozen SD.
#: Names are HLS common names; HLS L30/S30 band ids per group live in ``lssr_ray.data.hls``.
BAND_GROUPS: dict[str, tuple[str, str, str]] = {
    "rgb": ("red", "green", "blue"),
    "ir": ("nir", "swir1", "swir2"),
}
#: The six output bands in store order.
OUTPUT_BANDS: tuple[str, ...] = BAND_GROUPS["rgb"] + BAND_GROUPS["ir"]


def _from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys: {sorted(names)}")
    types = field_types(cls)
    kwargs = {}
    for name, value in data.items():
        kind = types[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = _from_dict(kind, value)  # a nested section (MapConfig.grid)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's type with ``X | None`` reduced to ``X`` (annotations are strings here)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if typing.get_origin(hint) in (typing.Union, UnionType) and len(args) == 1 else hint
    return out


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass, one line (read once from the source).

    The docstrings are the one place a field is explained: the generated command lines
    (:mod:`lssr_ray.cli.args`) show them as ``--help``.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a frozen binary): no help rather than no CLI
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for stmt, nxt in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            out[stmt.target.id] = " ".join(nxt.value.value.split())
    return out


def choice_field(default: str, choices: tuple[str, ...]) -> Any:
    """A string field limited to ``choices`` (checked by :func:`check_choices`, offered by the CLI)."""
    return field(default=default, metadata={"choices": choices})


def check_choices(cfg: Any) -> None:
    """Raise :class:`ConfigError` for a choice field (:func:`choice_field`) set outside its choices."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class GridConfig:
    """How an AOI becomes an output grid and chips."""

    output_resolution: float = 10.0
    """Output pixel size in metres (the Sentinel-2 10 m grid)."""
    scale: int = SCALE
    """Input pixel / output pixel ratio: each 30 m input pixel maps to exactly scale×scale outputs."""
    chip_size: int = 64
    """Chip edge in *input* (30 m) pixels; the model sees chip_size×scale output pixels (192)."""
    overlap: int = 8
    """Overlap between neighbouring chips in input pixels (split evenly as a halo on each side)."""

    def __post_init__(self) -> None:
        if self.scale < 1 or self.chip_size < 1:
            raise ConfigError(f"scale and chip_size must be >= 1, got {self.scale}, {self.chip_size}")
        if self.overlap < 0 or self.overlap % 2 or self.overlap >= self.chip_size:
            raise ConfigError(
                f"overlap must be an even number of input pixels in [0, chip_size), got {self.overlap}"
            )

    @property
    def input_resolution(self) -> float:
        """Input pixel size in metres (30 m)."""
        return self.output_resolution * self.scale

    @property
    def stride(self) -> int:
        """Distance between chip origins in input pixels (= core size of a chip)."""
        return self.chip_size - self.overlap

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridConfig:
        return _from_dict(cls, data)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild any config dataclass from ``asdict`` output (unknown keys are an error)."""
    return _from_dict(cls, data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a plain dict (sections are turned into dataclasses by callers)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open() as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"{p}: malformed YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class TrainConfig:
    """Adapter fine-tuning with Ray Train (``jobs/train.py --config configs/<name>.yaml``)."""

    run_name: str = "lssr-cpu"
    """Run folder name under ``storage_path``; starting a job again with the same name resumes it."""
    storage_path: str = "runs"
    """Where checkpoints go: a local folder (made absolute) or ``s3://bucket/prefix``."""
    base: str = portable_ref(SMALL_BASE_DIR)
    """Frozen base: a diffusers SD folder (local path or ``s3://`` URI)."""
    pairs: str = "data/pairs"
    """Training pairs (docs/PAIRS.md format), local path or ``s3://``."""
    val_pairs: str | None = None
    """Validation pairs store; default: the ``pairs`` store filtered by ``val_sensor_pairs``."""
    train_sensor_pairs: tuple[str, ...] = ("S2deg-S2",)
    """Pair kinds trained on (``S2deg-S2`` synthetic, ``L8-S2`` real; docs/PAIRS.md)."""
    val_sensor_pairs: tuple[str, ...] = ("L8-S2",)
    """Pair kinds validated on; by default the real Landsat-8 / Sentinel-2 pairs, never trained on."""
    chip_size: int = 16
    """Training chip edge in 30 m cells (the 10 m edge, 3x this, must be a multiple of 8 for the VAE)."""
    augment: bool = True
    """Random crops, flips and 90-degree rotations of training chips."""
    num_workers: int = 2
    """Ray Train workers (one per GPU on GPU clusters)."""
    use_gpu: str = choice_field("auto", ("auto", "true", "false"))
    """``auto`` (GPU if the cluster has one), ``true`` or ``false``."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (on 2-core hosts keep num_workers * cpus <= 2)."""
    batch_size: int = 2
    """Chips per worker per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    learning_rate: float = 1e-4
    """AdamW learning rate for adapters, fusion and SAR head."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 60
    """Optimizer steps in total (across restarts)."""
    checkpoint_every: int = 20
    """Optimizer steps between adapter checkpoints."""
    val_every: int = 20
    """Optimizer steps between validations."""
    precision: str = choice_field("auto", ("auto", "fp32", "bf16", "fp16"))
    """``auto`` (bf16 autocast on GPUs that support it, else fp16 on GPU, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``."""
    max_failures: int = 3
    """Worker failures Ray Train recovers from (restarting from the last checkpoint)."""
    num_to_keep: int = 2
    """Checkpoints kept in storage."""
    seed: int = 0
    """Seed for model init, modality dropout, crops and the validation split."""
    holdout_days: int = 1
    """Training pairs whose target date is within this many days of a validation pair's target
    date are left out (the validation scenes are then never seen, not even degraded); -1: off."""
    holdout_locations: tuple[str, ...] = ("hesbaye_2021",)
    """Locations (pairs-store ``location``, docs/TRAINING.md "Protocol") never trained or validated
    on: the evaluation ground. ``jobs/evaluate.py`` refuses to score a location a checkpoint saw."""
    model: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of :class:`lssr_ray.model.lssr.LSSRConfig` fields (timestep, modality_dropout,
    adapters...), checked by ``LSSRConfig.from_dict`` (the model owns its settings)."""
    loss: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of :class:`lssr_ray.model.losses.LSSRLoss` (weights, perceptual_model)."""

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("model", "loss"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} must be a mapping of settings, got {getattr(self, name)!r}")
        for name in ("num_workers", "batch_size", "grad_accum", "max_steps", "checkpoint_every", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class MapConfig:
    """One mapping run (``jobs/map_region.py``): AOI -> LSSR -> georeferenced Zarr store.

    Fields marked *run identity* decide the output bytes: they are hashed into the run id
    (:meth:`run_id`) and stored in the store's attributes; a resumed run must match them.
    """

    aoi: str
    """AOI GeoJSON path (lon/lat). *Run identity* (its file content is hashed)."""
    catalog: str = str(REPO_ROOT / "data" / "archive" / "catalog.json")
    """STAC catalog href, local or ``s3://``. *Run identity*."""
    asset_access: str = choice_field("https", ASSET_ACCESS)
    """``https`` (default) reads each item's https asset; ``s3`` reads its ``s3_`` twin (direct S3 in
    us-west-2, LP DAAC's temporary keys) where the item has one, else the https asset."""
    stac_url: str | None = None
    """Search this STAC API (e.g. NASA CMR-STAC LPCLOUD) for HLS over the AOI and dates first and map
    from the catalog saved next to the store (``<out>.search/``; a rerun reuses it); replaces --catalog."""
    start: str | None = None
    """First acquisition date, ISO (inclusive). *Run identity*."""
    end: str | None = None
    """Last acquisition date, ISO (inclusive). *Run identity*."""
    out: str | None = None
    """Output store, local path or ``s3://bucket/key.zarr``; default ``out/<aoi stem>.zarr``."""
    checkpoint: str | None = None
    """Adapter checkpoint folder; default :data:`DEFAULT_CHECKPOINT_DIR` (untrained adapters with a
    warning when it does not exist). *Run identity* (its files are hashed)."""
    base: str = str(DEFAULT_BASE_DIR)
    """Frozen SD base folder or ``s3://`` URI. *Run identity* (fingerprint)."""
    engine: str = choice_field("auto", ENGINES)
    """``auto`` | ``torch`` | ``onnxruntime`` | ``tensorrt`` | ``bicubic`` (no model: x3 bicubic, for
    dry runs). *Run identity* (resolved kind)."""
    precision: str = choice_field("auto", ("auto", "fp32", "bf16", "fp16"))
    """GPU inference precision (torch autocast, TensorRT build; ``make_engine``); CPU runs fp32."""
    dates: str = choice_field("all", DATE_MODES)
    """``all`` (one time step per local solar day) or ``clearest`` (one step: the clearest day per chip). *Run identity*."""
    grid: GridConfig = field(default_factory=GridConfig)
    """The output grid and chips (chip_size and overlap are *run identity*)."""
    batch_size: int = 4
    """Chips per model call (the ONNX graph is exported with this fixed batch). *Run identity*."""
    seed: int = 0
    """Seed of the untrained-adapter fallback model. *Run identity*."""
    uncertainty: bool = False
    """Also write the ``uncertainty`` trust layer (spread over test-time variants; costs several
    forward passes per chip). ``consistency`` is always written. *Run identity*."""
    num_actors: int = 0
    """LSSR actors; 0 = one per GPU on GPU clusters, else 1."""
    actor_cpus: float = 1.0
    """CPUs reserved per LSSR actor (its inference threads)."""
    read_cpus: float = 0.5
    """CPUs reserved per read / commit / blend actor (fractional so reads never starve)."""
    read_actors: int = 1
    """Read actors (each reads one block window of ``block`` x ``block`` chips per call)."""
    block: int = 8
    """Chips per read block edge: one read and one LSSR / commit call per block^2 chips (bench/iowa_dry_run.py)."""
    resume: bool = True
    """Resume into an existing store with the same run identity (committed chips are skipped)."""
    overwrite: bool = False
    """Delete an existing store (and its partials) first."""
    quicklook: bool = True
    """Write quicklook PNGs (30 m input next to 10 m output) next to a local store."""
    keep_partials: bool = False
    """Keep ``_partials/`` (per-chip predictions) in the completed store; by default they are removed."""
    timeseries_copy: bool = False
    """Also write ``<store>_ts.zarr``, rechunked for per-pixel time series (time = all, y = x = 256)."""
    ray_address: str | None = None
    """Ray cluster address; default ``auto`` when ``RAY_ADDRESS`` is set (``ray job submit``), else a local Ray."""
    classifier: str | None = None
    """Crop-type classifier folder for the final crop_type stage; default the bundled
    ``models/croptype-lgbm`` when present; ``"none"`` skips the stage (noted in the store)."""
    yes: bool = False
    """Start a run estimated longer than :attr:`confirm_over_s` without asking (``--yes``)."""
    confirm_over_s: float = 3600.0
    """Runs estimated longer than this (seconds) need ``--yes`` or a confirmation on a terminal;
    non-interactive runs without ``--yes`` are refused before anything is written."""
    chip_s_estimate: float = 0.5
    """Seconds per chip-date per LSSR actor used for that estimate (CPU torch measured 0.6-0.8 s,
    onnxruntime about half; GPUs far less)."""
    stall_timeout_s: float = 900.0
    """Stage 1 stops with an error (committed chips kept) when no chip is committed for this long."""
    aux_stac: str | None = None
    """Aux layers from a STAC API root or a saved ItemCollection / catalog file (hrefs readable as
    they are, not signed here), from the ``aux_*_collection`` collections; default: the archive
    catalog's own aux layers. *Run identity* when set."""
    aux_dem_collection: str = "cop-dem-glo-30"
    """DEM collection in ``aux_stac`` (asset ``data``, metres); ``none`` skips the DEM."""
    aux_landcover_collection: str = "esa-worldcover"
    """Land-cover collection in ``aux_stac`` (asset ``map``, ESA WorldCover codes); ``none`` skips it."""
    aux_sar_collection: str = "sentinel-1-rtc"
    """Sentinel-1 collection in ``aux_stac`` (assets ``vv``/``vh``, linear gamma0 -> dB); ``none`` skips it."""

    def aux_collections(self) -> dict[str, str]:
        """``{"dem", "landcover", "sar"}`` -> collection id in :attr:`aux_stac`."""
        return {k: getattr(self, f"aux_{k}_collection") for k in ("dem", "landcover", "sar")}

    def __post_init__(self) -> None:
        check_choices(self)
        if not isinstance(self.grid, GridConfig):
            raise ConfigError(f"grid must be a GridConfig, got {type(self.grid).__name__}")
        for name in ("batch_size", "block", "read_actors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.confirm_over_s < 0 or self.chip_s_estimate < 0 or self.stall_timeout_s <= 0:
            raise ConfigError(f"confirm_over_s and chip_s_estimate must be >= 0 and stall_timeout_s > 0, got "
                              f"{self.confirm_over_s}, {self.chip_s_estimate}, {self.stall_timeout_s}")
        if self.num_actors < 0 or self.actor_cpus <= 0 or self.read_cpus <= 0:
            raise ConfigError(f"num_actors must be >= 0 and actor_cpus/read_cpus > 0, got "
                              f"{self.num_actors}, {self.actor_cpus}, {self.read_cpus}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MapConfig:
        return _from_dict(cls, data)


__all__ = ["ASSET_ACCESS", "BAND_GROUPS", "OUTPUT_BANDS", "REPO_ROOT", "GridConfig", "MapConfig", "TrainConfig",
           "from_dict", "load_yaml", "portable_ref"]
