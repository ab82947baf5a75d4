"""Checks a mapping run makes in the driver before it commits to anything.

:func:`preflight` runs after planning (:func:`~lssr_ray.mapping.pipeline.plan_map`) and before
the store is created or Ray is started, so a user mistake costs seconds, leaves nothing behind
(the obvious corrected rerun is not refused as "store exists") and is reported in one line:

* the output location (:func:`~lssr_ray.mapping.output_target.output_state`): absent, empty or a
  store of this project; a file, foreign files, a missing bucket or an unwritable prefix refused;
* the engine: ``tensorrt`` needs TensorRT importable and a CUDA GPU on a local Ray;
* the checkpoint was trained on this base (the fingerprint it records);
* every granule's declared CRS (catalog ``proj:code``/``proj:epsg``) is its file's CRS: a
  contradiction would otherwise place the granule in the wrong zone and end as
  "no granule overlaps the chip".
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lssr_ray.errors import ConfigError, CRSMismatchError, MissingDataError, MissingExtraError

GPU_EXTRA_HINT = "install the gpu extra (pip install 'lssr-ray[gpu]') on a host with an NVIDIA GPU"


def check_engine(kind: str, *, local_ray: bool = True) -> None:
    """:class:`MissingExtraError` if the concrete engine ``kind`` cannot run on this host.

    Only a local Ray is checked: on a cluster the LSSR actors run on other nodes (GPU workers
    with TensorRT while the driver has neither), where only the actors can tell.
    """
    from lssr_ray.infer.factory import cuda_available

    if not local_ray:
        return
    if kind == "tensorrt":
        missing = [what for what, ok in (("TensorRT is not importable", importlib.util.find_spec("tensorrt")),
                                         ("no CUDA GPU is visible", cuda_available())) if not ok]
        if missing:
            raise MissingExtraError(
                f"--engine tensorrt cannot run here ({' and '.join(missing)}): use --engine auto or "
                f"--engine onnxruntime, or {GPU_EXTRA_HINT}")
    elif kind == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise MissingExtraError("--engine onnxruntime needs the onnxruntime package: pip install onnxruntime, "
                                "or use --engine torch")


def check_checkpoint_base(checkpoint: str | None, base: str, base_sha256: str) -> None:
    """:class:`ConfigError` if ``checkpoint`` records a base fingerprint other than ``base``'s."""
    if not checkpoint:
        return
    meta = json.loads((Path(checkpoint) / "lssr_config.json").read_text())
    want = str(meta.get("base", {}).get("fingerprint", ""))
    if want and want != base_sha256:
        raise ConfigError(
            f"--checkpoint {checkpoint} was trained on base {meta['base'].get('uri')} (fingerprint {want[:12]}), "
            f"but --base {base} has fingerprint {base_sha256[:12]}: pass the base it was trained on, "
            "or a checkpoint trained on this base")


def _file_crs(granule: Any) -> Any:
    from lssr_ray.data.readers import open_raster

    key = "Fmask" if "Fmask" in granule.assets else next(iter(sorted(granule.assets)), None)
    if key is None:
        return None
    try:
        with open_raster(granule.assets[key]) as src:
            return src.crs
    except MissingDataError:
        return None  # missing/corrupt file: the reader records that chip as a skip with its reason


def check_granule_crs(granules: Iterable[Any], *, threads: int = 8) -> None:
    """:class:`CRSMismatchError` naming the catalog items whose declared CRS is not their file's.

    Reads one header per granule (its ``Fmask``, else its first asset), in ``threads`` threads
    (headers of ``s3://`` assets are small ranged reads).
    """
    from rasterio.crs import CRS

    granules = list(granules)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(granules)))) as pool:
        found = list(pool.map(_file_crs, granules))
    def same(file_crs: Any, declared: str) -> bool:
        want = CRS.from_user_input(declared)
        # a file's WKT may name the zone differently than its EPSG code (real HLS COGs do)
        return file_crs == want or (want.to_epsg() is not None and file_crs.to_epsg(confidence_threshold=70) == want.to_epsg())

    bad = [(g, crs) for g, crs in zip(granules, found) if crs is not None and not same(crs, g.crs)]
    if bad:
        g, crs = bad[0]
        more = f" (and {len(bad) - 1} more item(s))" if len(bad) > 1 else ""
        code = crs.to_string() if crs else "none"
        raise CRSMismatchError(
            f"catalog item {g.id} declares {g.crs} but its file says {code}{more}: "
            "fix the item's proj:code/proj:epsg in the catalog (or remove the item) and rerun")


def preflight(plan: Any, storage_options: Mapping[str, Any] | None = None) -> str:
    """All driver-side checks of a planned run (see the module docstring); returns the output
    state (``"absent"``, ``"empty"`` or ``"ours"``). Raises a one-line
    :class:`~lssr_ray.errors.LssrError` on the first failed check."""
    from lssr_ray.mapping.output_target import output_state

    cfg = plan.cfg
    state = output_state(plan.store, storage_options=storage_options)
    local_ray = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    check_engine(plan.engine, local_ray=local_ray)
    check_checkpoint_base(plan.checkpoint, cfg.base, plan.identity["base_sha256"])
    check_granule_crs(plan.stage.granules)
    return state


__all__ = ["GPU_EXTRA_HINT", "check_checkpoint_base", "check_engine", "check_granule_crs", "preflight"]
