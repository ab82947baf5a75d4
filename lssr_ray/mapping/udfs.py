"""Ray Data UDFs of the mapping pipeline: plain callable classes, testable on a hand-made batch.

Stage 1 (per chip and date): :class:`ReadChips` (block read -> one row per chip) ->
:class:`LSSRPredictor` (engine loaded once per actor) -> :class:`CommitPartials` (one atomic
partial per chip and date). Stage 2 (per output chunk and date): :class:`BlendAndWrite`.

Row columns between the stage-1 UDFs (B rows; h = w = chip_size, H = W = 3h):

=========== ============ =============================================================
column      dtype/shape  meaning
=========== ============ =============================================================
chip_id     str (B,)     stable chip id ``r{row:04d}c{col:04d}``
ti          int64 (B,)   index on the store's time axis
status      str (B,)     ``ok`` or ``skipped``
reason      str (B,)     skip reason token (:data:`~lssr_ray.mapping.partials.SKIP_REASONS`) or ""
detail      str (B,)     human-readable detail (skips, granules that failed to read)
granules    str (B,)     source granule id(s) used, comma-separated
window      int64 (B, 4) chip window (row_off, col_off, H, W) on the 10 m output grid
lr ...      batch contract (docs/ARCHITECTURE.md); zeros on skipped rows
sr          float32      (B, 6, H, W) reflectance, NaN = nodata (after the predictor)
consistency float32      (B, 6, H, W) trust layer (:mod:`~lssr_ray.mapping.trust_layers`)
uncertainty float32      (B, 6, H, W) trust layer, only with ``uncertainty=True``
read_s ...  float64 (B,) seconds spent per step (read_s, infer_s, commit_s)
=========== ============ =============================================================

Partials of chip ``c`` at time step ``ti`` are ``<store>/_partials/t{ti:04d}/<c>.npz``
(:func:`lssr_ray.mapping.partials.partial_path`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lssr_ray.config import DEFAULT_BASE_DIR, OUTPUT_BANDS
from lssr_ray.errors import (
    AuthenticationError,
    ConfigError,
    CRSMismatchError,
    MissingDataError,
    StorageUnreachableError,
    one_line,
    read_skip_reason,
)

_META_COLS = ("chip_id", "ti", "status", "reason", "detail", "granules", "window", "present")




class ReadChips:
    """Read one block of chips for one date (or all dates, clearest per chip) -> one row per chip.

    Each input row is a work item: ``chips`` (comma-separated chip ids of one read block),
    ``ti`` (time index) and ``granules`` (comma-separated granule ids to choose from: those of
    the date, or all for ``clearest``). Every band of every granule is read once over the block's
    window and cut into chips (:func:`lssr_ray.data.cube.read_chips`). Skipped chips
    (:data:`~lssr_ray.mapping.partials.SKIP_REASONS`) are rows with ``status == "skipped"`` and
    zero arrays. An authentication failure or an unreachable endpoint is not a skip: it fails
    the job. Each actor sets up the archive credentials from its own node
    (:func:`lssr_ray.credentials.configure_archive_access`): nothing secret is shipped to it.
    """

    def __init__(self, plan: Any, granules: Sequence[Any], *, aux: Any = None) -> None:
        from lssr_ray.credentials import configure_archive_access

        configure_archive_access()
        self.plan = plan
        self.granules = {str(g.id): g for g in granules}
        self.aux = aux
        self.chips = {c.id: c for c in plan.chips}

    def _read(self, chip_ids: list[str], granule_ids: list[str]) -> list[tuple[Any, Any]]:
        from lssr_ray.data.cube import read_chips

        chips = tuple(self.chips[c] for c in chip_ids)
        sub = dataclasses.replace(self.plan, chips=chips)
        missing = [g for g in granule_ids if g not in self.granules]
        if missing:
            raise ConfigError(f"ReadChips: unknown granule ids {missing}; known: {sorted(self.granules)[:5]}...")
        grans = [self.granules[g] for g in granule_ids]
        # one block: a block edge as large as the lattice keeps every chip of the item together
        block = max(self.plan.lattice_shape)
        try:
            return list(read_chips(sub, grans, aux=self.aux, block=block))
        except (CRSMismatchError, MissingDataError):
            pass  # a source broken in a way read_chips does not skip (e.g. a COG cut before its geokeys)
        good, bad, errors = self._probe(chips, grans)
        if good:
            recs = list(read_chips(sub, good, aux=self.aux, block=block))
            return [(dataclasses.replace(r, detail="; ".join(filter(None, [r.detail, *bad]))), x) for r, x in recs]
        from lssr_ray.data.cube import ChipRecord

        reason = read_skip_reason(errors) if errors else "corrupt_source"
        return [(ChipRecord(chip_id=c.id, input_window=tuple(c.input_window), bounds=tuple(c.bounds),
                            skipped=reason, detail="; ".join(bad)), None) for c in chips]

    def _probe(self, chips: Sequence[Any], grans: Sequence[Any]) -> tuple[list[Any], list[str], list[Any]]:
        """Split granules into readable ones, failure messages and the read errors among them
        (read each over the block). Authentication and unreachable endpoints are job errors."""
        from lssr_ray.data.grid import union_window
        from lssr_ray.data.readers import read_lowres

        win = union_window([c.input_window for c in chips])
        good, bad, errors = [], [], []
        for g in grans:
            try:
                read_lowres(g, self.plan.grid, window=win)
                good.append(g)
            except (StorageUnreachableError, AuthenticationError):
                raise  # the endpoint is down / credentials are wrong: every chip would fail alike
            except MissingDataError as exc:
                bad.append(f"granule {g.id} unreadable: {exc}")
                errors.append(exc)
            except CRSMismatchError as exc:
                bad.append(f"granule {g.id} unreadable: {exc}")
        return good, bad, errors

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        for items, ti, grans in zip(batch["chips"], batch["ti"], batch["granules"]):
            t0 = time.perf_counter()
            recs = self._read(str(items).split(","), [g for g in str(grans).split(",") if g])
            dt = (time.perf_counter() - t0) / max(1, len(recs))
            for rec, x in recs:
                rows.append(self._row(rec, x, int(ti), dt))
        return _stack(rows)

    def _row(self, rec: Any, x: Mapping[str, np.ndarray] | None, ti: int, read_s: float) -> dict[str, Any]:
        chip = self.chips[rec.chip_id]
        h, w = chip.input_shape
        H, W = chip.output_shape
        row = {
            "chip_id": rec.chip_id,
            "ti": ti,
            "status": "skipped" if x is None else "ok",
            "reason": rec.skipped or "",
            "detail": rec.detail or "",
            "granules": ",".join(rec.granules) or rec.granule_id or "",  # every mosaic contributor
            "window": np.asarray(chip.output_window, np.int64),
            "read_s": read_s,
        }
        if x is None:
            row.update(
                lr=np.zeros((len(OUTPUT_BANDS), h, w), np.float32),
                dem=np.zeros((1, H, W), np.float32),
                landcover=np.zeros((1, H, W), np.int64),
                sar=np.zeros((2, H, W), np.float32),
                month=np.int64(1),
                present=np.zeros(3, np.float32),
            )
        else:
            row.update(
                lr=np.asarray(x["lr"], np.float32),
                dem=np.asarray(x["dem"], np.float32),
                landcover=np.asarray(x["landcover"], np.int64),
                sar=np.asarray(x["sar"], np.float32),
                month=np.int64(x["month"]),
                present=np.asarray(x["present"], np.float32),
            )
        return row


def _stack(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    if not rows:
        return {}
    return {k: np.asarray([r[k] for r in rows], dtype=str if isinstance(rows[0][k], str) else None)
            for k in rows[0]}


class LSSRPredictor:
    """The LSSR model behind one engine; built once per actor, called per batch.

    ``__call__`` runs ``preprocess`` -> engine -> ``postprocess`` on the ``ok`` rows and returns
    the meta columns plus ``sr`` (B, 6, 3h, 3w) float32 (NaN rows for skipped chips), the trust
    layers (``consistency``, and ``uncertainty`` when asked; same shape) and ``infer_s``. The
    input arrays are dropped so only predictions travel on.

    Args:
        engine: ``torch``, ``onnxruntime``, ``tensorrt``, ``bicubic`` or ``auto``
            (:func:`~lssr_ray.infer.factory.make_engine`; ``auto`` runs ``onnx`` when given).
        checkpoint: adapter checkpoint folder (resolved by
            :func:`~lssr_ray.model.checkpoint.resolve_checkpoint`), or None for untrained adapters
            (seeded).
        base: frozen base folder / URI.
        onnx: the exported graph's path for the ONNX engines (weights may sit beside it as
            external data); where that path is not on the actor's node, the same graph is
            exported into this node's cache, so multi-node clusters need no shared disk. Bytes
            (a single-file graph under 2 GB) are written to a temporary file.
        batch_size, chip_size: model call size; the ONNX graph fixes both.
        uncertainty: also compute the ``uncertainty`` trust layer (several forward passes).
        precision: GPU inference precision (:func:`~lssr_ray.infer.factory.make_engine`).
    """

    def __init__(
        self,
        *,
        engine: str = "torch",
        checkpoint: str | None = None,
        base: str = str(DEFAULT_BASE_DIR),
        seed: int = 0,
        onnx: bytes | str | None = None,
        batch_size: int = 4,
        chip_size: int = 64,
        device: str | None = None,
        uncertainty: bool = False,
        precision: str = "auto",
    ) -> None:
        from lssr_ray.infer.factory import make_engine, resolve_kind

        self.scale = 3
        self.uncertainty = bool(uncertainty)
        kind = resolve_kind(engine, with_graph=onnx is not None)
        if kind == "bicubic":  # no model to load: the pipeline at the cost of an interpolation
            self.engine = make_engine("bicubic", batch_size=batch_size, chip_shape=(chip_size, chip_size))
        elif kind == "torch":
            import torch

            from lssr_ray.model.checkpoint import CheckpointRef
            from lssr_ray.model.lssr import LSSRModel

            model = LSSRModel.from_ref(CheckpointRef(checkpoint, base, seed)).merge_for_inference()
            self.scale = model.config.scale
            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.engine = make_engine("torch", torch_module=model, batch_size=batch_size,
                                      chip_shape=(chip_size, chip_size), device=dev, precision=precision)
        else:
            if onnx is None:
                raise ConfigError(f"engine {kind!r} needs the exported ONNX graph (onnx=bytes or path)")
            path = onnx
            if isinstance(onnx, (bytes, bytearray)):
                fd, path = tempfile.mkstemp(suffix=".onnx", prefix="lssr-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(onnx)
            elif not os.path.isfile(onnx):  # another node's cache: export the same graph here
                from lssr_ray.infer.export import cached_export
                from lssr_ray.model.checkpoint import CheckpointRef

                path = cached_export(CheckpointRef(checkpoint, base, seed), batch_size=batch_size,
                                     chip_size=chip_size)
            self.engine = make_engine(kind, onnx_path=path, batch_size=batch_size,
                                      chip_shape=(chip_size, chip_size), precision=precision)
        self.kind = self.engine.name

    def predict(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Batch-contract arrays (all rows valid) -> sr (B, 6, 3h, 3w) float32 reflectance."""
        from lssr_ray.infer.base import super_resolve

        return super_resolve(self.engine, batch, scale=self.scale)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lssr_ray.mapping.trust_layers import predict_with_trust, trust_vars

        t0 = time.perf_counter()
        ok = np.asarray(batch["status"]) == "ok"
        b, _, h, w = np.shape(batch["lr"])
        layers = {k: np.full((b, len(OUTPUT_BANDS), h * self.scale, w * self.scale), np.nan, np.float32)
                  for k in ("sr", *trust_vars(self.uncertainty))}
        if ok.any():
            keys = ("lr", "dem", "landcover", "sar", "month", "present")
            got = predict_with_trust(self.predict, {k: np.asarray(batch[k])[ok] for k in keys},
                                     scale=self.scale, uncertainty=self.uncertainty)
            for k, arr in layers.items():
                arr[ok] = got[k]
        out = {k: np.asarray(batch[k]) for k in (*_META_COLS, "read_s")}
        out.update(layers)
        out["infer_s"] = np.full(b, (time.perf_counter() - t0) / max(1, int(ok.sum())), np.float64)
        return out


@contextlib.contextmanager
def _worker_credentials(url: str) -> Any:
    """Turn a store write refused for missing/denied credentials in a Ray worker into an
    :class:`AuthenticationError` that says where workers get credentials from."""
    try:
        yield
    except Exception as exc:
        from botocore.exceptions import NoCredentialsError

        if not isinstance(exc, (NoCredentialsError, PermissionError)):
            raise
        raise AuthenticationError(
            f"authentication failed writing {url} from a Ray worker ({one_line(exc)}); credentials are not "
            "sent to workers (the Ray dashboard would show them): give each node its own (instance or pod role, "
            "AWS_* variables or ~/.aws on the node, LSSR_STORAGE_OPTIONS without keys) and check the bucket's "
            "write permissions") from exc


class CommitPartials:
    """Commit each row as one atomic partial (``ok`` with its prediction, or a recorded skip).

    Returns only small columns (no pixels): the meta columns plus the timings, which the driver
    streams for the progress bar and the summary.
    """

    def __init__(self, store: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.store = str(store)
        self.storage_options = dict(storage_options or {})  # store.py needs a dict for s3://

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lssr_ray.mapping.partials import commit_partial
        from lssr_ray.mapping.trust_layers import TRUST_VARS

        trust = [k for k in TRUST_VARS if k in batch]
        commit_s = []
        for i, cid in enumerate(batch["chip_id"]):
            t0 = time.perf_counter()
            ti = int(batch["ti"][i])
            ok = str(batch["status"][i]) == "ok"
            grans = [g for g in str(batch["granules"][i]).split(",") if g]
            timing = {"read_s": float(batch["read_s"][i]), "infer_s": float(batch["infer_s"][i])}
            with _worker_credentials(self.store):
                commit_partial(self.store, ti, str(cid), sr=batch["sr"][i] if ok else None,
                               layers={k: batch[k][i] for k in trust} if ok else None,
                               window=[int(v) for v in batch["window"][i]] if ok else None,
                               status="ok" if ok else "skipped", reason=None if ok else str(batch["reason"][i]),
                               detail=str(batch["detail"][i]), granules=grans, timing=timing,
                               present=batch["present"][i] if ok else None, storage_options=self.storage_options)
            commit_s.append(time.perf_counter() - t0)
        out = {k: np.asarray(batch[k]) for k in _META_COLS if k not in ("window", "present")}
        out.update(read_s=np.asarray(batch["read_s"]), infer_s=np.asarray(batch["infer_s"]),
                   commit_s=np.asarray(commit_s, np.float64))
        return out


class BlendAndWrite:
    """Blend a chunk's own and neighbouring partials (:func:`blend_chunk`) and write the chunk.

    Input rows: ``row``, ``col`` (chip lattice = chunk index) and ``ti``. Each chunk is written
    by exactly one call (chunk-aligned region write); chunks with no prediction at all are left
    unwritten (they read as NaN / valid 0). Output: ``row``, ``col``, ``ti``, ``written``.
    """

    def __init__(self, store: str, *, core: int, halo: int,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        from lssr_ray.mapping.store import read_layout

        self.store = str(store)
        self.core, self.halo = int(core), int(halo)
        self.storage_options = dict(storage_options or {})  # store.py needs a dict for s3://
        self.layout = read_layout(self.store, storage_options=self.storage_options)
        if self.layout.chunk != self.core:
            raise ConfigError(f"store chunk {self.layout.chunk} px != chip core {self.core} px")

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lssr_ray.mapping.blend import blend_chunk
        from lssr_ray.mapping.partials import load_neighbourhood_layers
        from lssr_ray.mapping.store import write_chunk

        written = []
        for r, c, ti in zip(batch["row"], batch["col"], batch["ti"]):
            preds = load_neighbourhood_layers(self.store, int(ti), int(r), int(c),
                                              ("sr", *self.layout.trust_layers),
                                              storage_options=self.storage_options)
            if all(p is None for p in preds["sr"].values()):
                written.append(False)
                continue
            chunk = blend_chunk(preds["sr"], core=self.core, halo=self.halo)
            # each trust layer is blended with the same weights as the reflectance it describes
            trust = {k: blend_chunk(preds[k], core=self.core, halo=self.halo)
                     for k in self.layout.trust_layers if any(p is not None for p in preds[k].values())}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                write_chunk(self.store, chunk, row_off=int(r) * self.core, col_off=int(c) * self.core,
                            time_index=int(ti), layout=self.layout, layers=trust,
                            storage_options=self.storage_options)
            written.append(True)
        return {"row": np.asarray(batch["row"]), "col": np.asarray(batch["col"]),
                "ti": np.asarray(batch["ti"]), "written": np.asarray(written, bool)}



__all__ = ["BlendAndWrite", "CommitPartials", "LSSRPredictor", "ReadChips"]
