"""LSSR vs bicubic, nearest, a residual CNN and the VAE ceiling, on ground the model never saw.

``evaluate_data(data, checkpoint, out=...)`` takes a folder of WorldCereal-format patches (any
number, any subset of layers; converted with :func:`lssr_ray.data.pairs_convert.convert_worldcereal`
into evaluation chips) or an existing pairs store (``*.zarr``, docs/PAIRS.md). The protocol
(docs/TRAINING.md "Protocol", :mod:`lssr_ray.train.protocol`):

- groups are **locations** x pair kind; a location the checkpoint (or the CNN) trained on, or the
  base was pretrained on, is refused (:class:`~lssr_ray.errors.ProtocolError`) unless
  ``allow_seen``, and then labelled "seen (not an evaluation)";
- each chip is cut with ``halo`` 30 m cells of real neighbours on every side (converted with
  ``chip_stride = chip_size - 2 halo`` so the scored cores tile the area) and only the core is
  scored, for every method alike;
- clear-sky pixels only: target pixels clear in Sentinel-2 (SCL 4/5/6) whose 30 m parent cell
  is clear in the input;
- real cross-sensor pairs pass a fixed radiometric QA first; every group also gets a
  radiometry-normalised PSNR (``psnr_*_norm``);
- paired bootstrap 95 % intervals (over chips, seeded) of LSSR - bicubic and LSSR - CNN;
- trust layer (:mod:`lssr_ray.model.trust`) for LSSR and the CNN: Spearman rho between the
  test-time-variant uncertainty and the absolute error, opensr-test improvement / omission /
  hallucination fractions, and the mean absolute 30 m consistency.

Methods: ``nearest`` (each 30 m cell repeated 3 x 3), ``bicubic`` (the model's own upsampling),
``lssr`` (:class:`lssr_ray.model.pipeline.LSSRPipeline`), ``cnn`` (optional,
:class:`lssr_ray.model.baseline.ResidualCNN`) and the reference ``vae_truth`` (the truth through
the base's VAE: the ceiling the base puts on any VAE-decoded output).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.config import SCALE
from lssr_ray.errors import ConfigError, MissingDataError, ProtocolError
from lssr_ray.train.protocol import (
    ALL_METRICS,
    BOOTSTRAP_METRICS,
    METRICS,
)

METHODS = ("nearest", "bicubic", "lssr")
#: Optional method: the residual-CNN baseline (``baseline_cnn=``).
CNN = "cnn"
REFERENCE = "vae_truth"
DEFAULT_HALO = 4
"""30 m cells of real neighbouring pixels around the scored core of every chip."""
SEEN_LABEL = "seen (not an evaluation)"
HELD_OUT_LABEL = "held out"


def _is_pairs_store(path: Path) -> bool:
    if not (path / ".zattrs").is_file():
        return False
    return json.loads((path / ".zattrs").read_text()).get("format") == "lssr-pairs"


def prepare_pairs(data: str | Path, workdir: str | Path, *, chip_size: int | None = None,
                  chip_stride: int | None = None) -> tuple[str, list[tuple[str, str]], list[str]]:
    """(pairs store, skipped [(item, reason)], notes) for ``data``: a pairs store is used as is;
    a folder of WorldCereal patches is converted into ``workdir/pairs.zarr`` (chips of
    ``chip_size`` cells every ``chip_stride`` cells; default: the converter's own tiling)."""
    from lssr_ray.data.pairs_convert import convert_worldcereal

    data = Path(data)
    if not data.exists():
        raise MissingDataError(f"--data {data} does not exist (a folder of WorldCereal patches or a pairs .zarr)")
    if _is_pairs_store(data):
        return str(data), [], [f"{data} is a pairs store: used as is"]
    store = Path(workdir) / "pairs.zarr"
    kw = {} if chip_size is None else {"chip_size": chip_size, "chip_stride": chip_stride}
    rep = convert_worldcereal(data, store, **kw)
    if not rep.written:
        raise MissingDataError(f"no pairs could be made from {data}:\n{rep.summary()}")
    return str(store), list(rep.skipped), list(rep.notes)


def _groups(kinds: list[str], ids: list[str], trained: set[str] | None) -> list[tuple[str, list[int]]]:
    out: dict[str, list[int]] = {}
    for i, (k, pid) in enumerate(zip(kinds, ids)):
        if k == "L8-S2":
            g = "L8-S2 real (not trained on)" if trained is None or pid not in trained else "L8-S2 real (TRAINED ON)"
        elif trained is None:
            g = f"{k} (training use unknown)"
        else:
            g = f"{k} synthetic, {'seen in training' if pid in trained else 'not trained on'}"
        out.setdefault(g, []).append(i)
    return sorted(out.items())


def _baselines(lr_img: np.ndarray, valid: np.ndarray, scale: int) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    from lssr_ray.data.batch import postprocess

    t = torch.as_tensor(lr_img)
    bic = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1).numpy()
    near = lr_img.repeat(scale, axis=2).repeat(scale, axis=3)
    return {"nearest": postprocess(near, valid, scale=scale), "bicubic": postprocess(bic, valid, scale=scale)}


def _vae_truth(model, hr: np.ndarray) -> np.ndarray:
    """Truth reflectance (B, 6, H, W) through the VAE (latent mean), back to reflectance."""
    import torch

    from lssr_ray.data.batch import preprocess
    from lssr_ray.data.normalize import image_to_reflectance

    b = hr.shape[0]
    img = preprocess({"lr": hr, "month": np.ones(b, np.int64)}, scale=1)["lr"]  # NaN-fill + scaling
    x = torch.as_tensor(img)
    x = torch.cat([x[:, :3], x[:, 3:]], 0)
    with torch.inference_mode():
        z = model.vae.encode(x).latent_dist.mean
        rec = model.vae.decode(z).sample.clamp(-1, 1)
    return image_to_reflectance(torch.cat([rec[:b], rec[b:]], 1).numpy())



def check_locations(locations: list[str], seen: dict[str, set[str] | None], *, allow_seen: bool) -> dict[str, str]:
    """Status of every location (:data:`HELD_OUT_LABEL` or :data:`SEEN_LABEL`); raises
    :class:`ProtocolError` for a seen one unless ``allow_seen``."""
    status = {}
    for loc in sorted(set(locations)):
        by = [src for src, locs in seen.items() if locs is not None and loc in locs]
        if by and not allow_seen:
            raise ProtocolError(
                f"location {loc} was seen by the {' and the '.join(by)} (trained or pretrained on it): "
                f"not an evaluation; evaluate on a held-out location or pass --allow-seen to label it '{SEEN_LABEL}'")
        status[loc] = SEEN_LABEL if by else HELD_OUT_LABEL
    return status


def _cnn_predictor(cnn, scale: int):
    import torch

    from lssr_ray.data.batch import postprocess, preprocess

    def predict(batch: dict[str, Any]) -> np.ndarray:
        inputs = preprocess(batch, scale=scale)
        with torch.inference_mode():
            return postprocess(cnn(torch.as_tensor(inputs["lr"])).numpy(), inputs["valid"], scale=scale)

    return predict


class _TrustAccumulator:
    """Pooled per-pixel uncertainty / error, correctness class counts and |consistency| of one
    method in one group."""

    def __init__(self) -> None:
        self.unc: list[np.ndarray] = []
        self.err: list[np.ndarray] = []
        self.counts = np.zeros(3)
        self.cons: list[float] = []

    def add(self, unc: np.ndarray, err: np.ndarray, frac: dict[str, float], cons: np.ndarray) -> None:
        self.unc.append(unc.ravel())
        self.err.append(err.ravel())
        if frac["n_pixels"]:
            self.counts += frac["n_pixels"] * np.array([frac["improvement"], frac["omission"], frac["hallucination"]])
        c = np.abs(cons[np.isfinite(cons)])
        if c.size:
            self.cons.append(float(c.mean()))

    def result(self) -> dict[str, float]:
        from lssr_ray.model.trust import rank_correlation

        n = self.counts.sum()
        fr = self.counts / n if n else np.full(3, np.nan)
        rho = rank_correlation(np.concatenate(self.unc), np.concatenate(self.err)) if self.unc else float("nan")
        return {"spearman_rho": rho, "improvement": float(fr[0]), "omission": float(fr[1]),
                "hallucination": float(fr[2]), "consistency_mae": float(np.mean(self.cons)) if self.cons else float("nan")}


def evaluate_pairs(
    store: str | Path,
    checkpoint: str | Path,
    *,
    chip_size: int = 16,
    halo: int = DEFAULT_HALO,
    batch_size: int = 8,
    png_dir: str | Path | None = None,
    max_png: int = 12,
    base: str | None = None,
    baseline_cnn: str | Path | None = None,
    allow_seen: bool = False,
    variants: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Metrics per group and method, bootstrap intervals and trust-layer numbers, and per pair.

    ``chip_size``: 30 m cells per input chip edge (3 x chip_size a multiple of 24 for the VAE and
    SAR head windows: 8, 16, 24...), stored chips are centre-cropped to it (never padded);
    ``halo``: cells around the scored core. ``png_dir``: up to ``max_png`` comparison PNGs.
    ``base``: frozen base path/URI (default: the one recorded in the checkpoint).
    ``baseline_cnn``: a ResidualCNN folder scored as ``cnn``. ``allow_seen``: score locations a
    model saw, labelled :data:`SEEN_LABEL`. ``variants``: test-time variants of the uncertainty
    (default :data:`lssr_ray.model.trust.DEFAULT_VARIANTS`).
    """
    import torch

    from lssr_ray.data.batch import preprocess
    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.data.pairs import open_pairs, pair_locations
    from lssr_ray.model.checkpoint import recorded_base
    from lssr_ray.model.metrics import evaluate
    from lssr_ray.model.pipeline import LSSRPipeline
    from lssr_ray.model.trust import (
        DEFAULT_VARIANTS,
        consistency,
        correctness_fractions,
        uncertainty,
    )
    from lssr_ray.train import protocol as P
    from lssr_ray.train.eval_report import save_comparison_png
    from lssr_ray.train.loop import VAL_SEED

    if chip_size < 1 or (SCALE * chip_size) % 24:
        raise ConfigError(f"chip_size {chip_size}: 3 x chip_size must be a multiple of 24 (use 8, 16, 24, ...)")
    if halo < 0 or chip_size - 2 * halo < 2:
        raise ConfigError(f"halo {halo}: need 0 <= halo and a core chip_size - 2 halo >= 2 cells (chip_size {chip_size})")
    checkpoint = Path(checkpoint)
    base_uri = base or recorded_base(checkpoint)
    ds = PairDataset(store, chip_size=chip_size)
    if ds.stored_chip_size < chip_size:
        raise ConfigError(f"{store} holds {ds.stored_chip_size}-cell chips, smaller than chip_size {chip_size}: "
                          "they would need padded borders; use a smaller --chip-size or convert the patches again")
    store_ds = open_pairs(store)
    all_locs = pair_locations(store_ds)
    locs = [all_locs[i] for i in ds.indices]
    kinds = [str(store_ds["sensor_pair"].values[i]) for i in ds.indices]
    seen = P.seen_locations(checkpoint, base_uri, baseline_cnn)
    status = check_locations(locs, seen, allow_seen=allow_seen)

    pipe = LSSRPipeline.from_pretrained(checkpoint, base=base_uri)
    scale = pipe.scale
    predictors = {"lssr": lambda b: pipe(b)["sr"]}
    if baseline_cnn is not None:
        from lssr_ray.model.baseline import ResidualCNN

        if not (Path(baseline_cnn) / "config.json").is_file():
            raise MissingDataError(f"baseline_cnn {baseline_cnn}: not a ResidualCNN folder (no config.json)")
        predictors[CNN] = _cnn_predictor(ResidualCNN.from_pretrained(baseline_cnn).eval(), scale)
    methods = (*METHODS, *([CNN] if CNN in predictors else []))
    variants = tuple(variants or DEFAULT_VARIANTS)
    hp = halo * scale  # halo in 10 m pixels
    per_pair: list[dict[str, Any]] = []
    trust: dict[str, dict[str, _TrustAccumulator]] = {}
    n_png = 0
    torch.manual_seed(VAL_SEED)  # the base VAE samples its latent: fix it for repeatable numbers
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        batch = collate(items)
        hr = batch["hr"].astype(np.float32)
        hr_ok = batch["hr_valid"][:, 0] > 0.5
        inputs = preprocess(batch, scale=scale)
        outs = _baselines(inputs["lr"], inputs["valid"], scale)
        spread = {}
        for m, predict in predictors.items():
            spread[m], var_outs = uncertainty(predict, batch, variants, return_outputs=True)
            outs[m] = var_outs["identity"] if "identity" in var_outs else predict(batch)
        target = np.where(hr_ok[:, None], hr, np.nan).astype(np.float32)
        outs[REFERENCE] = np.where(np.isfinite(outs["nearest"]), _vae_truth(pipe.model, target), np.nan)
        for j in range(len(items)):
            i = start + j
            t_core, lr_core = P.core(target[j], hp), P.core(batch["lr"][j], halo)
            ok = np.isfinite(P.core(outs["nearest"][j], hp)).all(0) & np.isfinite(t_core).all(0)
            row = {"pair_id": ds.pair_ids[i], "location": locs[i], "sensor_pair": kinds[i],
                   "status": status[locs[i]], "clear_fraction": float(ok.mean())}
            coef = P.affine_fit(lr_core, t_core, scale=scale)
            if kinds[i] == "L8-S2":
                row["qa"] = P.radiometric_qa(lr_core, t_core, scale=scale)
            row["affine"] = coef.tolist()
            for m in (*methods, REFERENCE):
                pred = P.core(outs[m][j], hp)
                row[m] = evaluate(torch.as_tensor(pred[None]), torch.as_tensor(t_core[None]))
                norm = evaluate(torch.as_tensor(P.apply_affine(pred, coef)[None]), torch.as_tensor(t_core[None]),
                                psnr_only=True)
                row[m].update({f"{k}_norm": v for k, v in norm.items()})
            group = _group_name(row)
            if row["clear_fraction"] > 0 and "failed QA" not in group:
                bic = P.core(outs["bicubic"][j], hp)
                for m in predictors:
                    pred = P.core(outs[m][j], hp)
                    err = np.abs(pred - t_core).mean(0)
                    trust.setdefault(group, {}).setdefault(m, _TrustAccumulator()).add(
                        np.where(ok, P.core(spread[m][j], hp).mean(0), np.nan), np.where(ok, err, np.nan),
                        correctness_fractions(np.where(ok, pred, np.nan), bic, t_core),
                        consistency(np.where(ok, pred, np.nan), np.where(np.isfinite(lr_core), lr_core, np.nan)))
            per_pair.append(row)
            if png_dir is not None and n_png < max_png and row["clear_fraction"] > 0:
                panels = [("30 m input", np.kron(lr_core, np.ones((1, scale, scale), np.float32))),
                          ("bicubic", P.core(outs["bicubic"][j], hp)), ("LSSR", P.core(outs["lssr"][j], hp))]
                if CNN in outs:
                    panels.append(("residual CNN", P.core(outs[CNN][j], hp)))
                panels.append(("Sentinel-2 truth", t_core))
                save_comparison_png(Path(png_dir) / f"{ds.pair_ids[i]}.png", panels,
                                    title=f"{ds.pair_ids[i]} ({kinds[i]}, {locs[i]}: {row['status']}); "
                                          f"scored core {chip_size - 2 * halo} cells")
                n_png += 1
    groups = _summarise(per_pair, methods, trust)
    return {"checkpoint": str(checkpoint), "base": str(base_uri), "baseline_cnn": None if baseline_cnn is None
            else str(baseline_cnn), "store": str(store), "chip_size": chip_size, "halo": halo,
            "core_size": chip_size - 2 * halo, "variants": list(variants),
            "seen_locations": {k: None if v is None else sorted(v) for k, v in seen.items()},
            "location_status": status, "qa": {"gain": list(P.QA_GAIN), "min_r": P.QA_MIN_R},
            "bootstrap": {"resamples": P.BOOTSTRAP_RESAMPLES, "seed": P.BOOTSTRAP_SEED, "confidence": 0.95},
            "groups": groups, "pairs": per_pair}


def _group_name(row: dict[str, Any]) -> str:
    name = f"{row['location']} {row['sensor_pair']} [{row['status']}]"
    if "qa" in row and not row["qa"]["passed"]:
        name += ", failed QA (not scored)"
    return name


def _summarise(per_pair: list[dict[str, Any]], methods: tuple[str, ...],
               trust: dict[str, dict[str, _TrustAccumulator]]) -> dict[str, Any]:
    from lssr_ray.train.protocol import paired_bootstrap

    by: dict[str, list[dict[str, Any]]] = {}
    for row in per_pair:
        by.setdefault(_group_name(row), []).append(row)
    groups: dict[str, Any] = {}
    for name, rows in sorted(by.items()):
        rows = [r for r in rows if r["clear_fraction"] > 0]
        g: dict[str, Any] = {"n_pairs": len(rows), "pair_ids": [r["pair_id"] for r in rows]}
        groups[name] = g
        if "failed QA" in name:
            g["qa"] = {r["pair_id"]: r["qa"] for r in rows}
            continue
        for m in (*methods, REFERENCE):
            g[m] = {k: float(np.nanmean([r[m][k] for r in rows])) if rows else float("nan") for k in ALL_METRICS}
        g["ci"] = {}
        for other in ("bicubic", CNN):
            if other not in methods:
                continue
            g["ci"][f"lssr-{other}"] = {k: paired_bootstrap([r["lssr"][k] for r in rows], [r[other][k] for r in rows])
                                        for k in BOOTSTRAP_METRICS}
        g["trust"] = {m: acc.result() for m, acc in trust.get(name, {}).items()}
    return groups


def evaluate_data(
    data: str | Path,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    chip_size: int = 16,
    halo: int = DEFAULT_HALO,
    max_png: int = 12,
    base: str | None = None,
    workdir: str | Path | None = None,
    baseline_cnn: str | Path | None = None,
    allow_seen: bool = False,
    variants: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Convert ``data`` if needed (into ``workdir/pairs.zarr``, kept, or a temporary folder;
    chips of ``chip_size`` cells every ``chip_size - 2 halo`` cells), evaluate, write ``out``
    (metrics JSON) with a markdown table beside it (same name, ``.md``) and the PNGs."""
    from lssr_ray.train.eval_report import to_markdown

    with tempfile.TemporaryDirectory(prefix="lssr-eval-") as tmp:
        store, skipped, notes = prepare_pairs(data, workdir or tmp, chip_size=chip_size,
                                              chip_stride=max(chip_size - 2 * halo, 1))
        result = evaluate_pairs(store, checkpoint, chip_size=chip_size, halo=halo, png_dir=png_dir, max_png=max_png,
                                base=base, baseline_cnn=baseline_cnn, allow_seen=allow_seen, variants=variants)
    result.update({"data": str(data), "skipped": [{"item": i, "reason": r} for i, r in skipped], "notes": notes})
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(to_markdown(result))
    return result


__all__ = ["ALL_METRICS", "CNN", "DEFAULT_HALO", "METHODS", "METRICS", "REFERENCE", "SEEN_LABEL", "check_locations",
           "evaluate_data", "evaluate_pairs", "prepare_pairs"]
