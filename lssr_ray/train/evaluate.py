"""LSSR vs bicubic vs nearest on pairs: PSNR/SSIM (RGB, IR), NDVI MSE, spectral angle.

``evaluate_data(data, checkpoint, out=...)`` takes a folder of WorldCereal-format patches (any
number, any subset of layers; converted with :func:`lssr_ray.data.pairs.convert_worldcereal`
into a temporary pairs store) or an existing pairs store (``*.zarr``, docs/PAIRS.md), and runs:

- ``nearest``: each 30 m cell repeated 3 x 3 (the 30 m input as it sits on the 10 m grid);
- ``bicubic``: bicubic x3 of the same input (the model's own upsampling, :func:`preprocess`);
- ``lssr``: :class:`lssr_ray.model.lssr.LSSRPipeline` from the checkpoint;
- ``cnn`` (optional, ``baseline_cnn=`` folder): :class:`lssr_ray.model.baseline.ResidualCNN`, bicubic
  plus a plain residual CNN trained on the same pairs and loss (``models/baseline-cnn``);
- reference ``vae_truth``: the Sentinel-2 truth through the base's VAE (encode mean, decode): the
  best any output decoded by that VAE can do, i.e. the ceiling the base puts on LSSR.

Metrics (:func:`lssr_ray.model.metrics.evaluate`) use clear-sky pixels only: target pixels that
are clear in Sentinel-2 (SCL 4/5/6) and whose 30 m parent cell is clear in the input. Chips are
cropped (centred) or padded to ``chip_size`` 30 m cells, the same window for every method.

Pairs are grouped by kind and by whether the checkpoint trained on them (``train_pairs.json``
written by :mod:`lssr_ray.train.loop`): real ``L8-S2`` pairs are never trained on;
synthetic ``S2deg-S2`` pairs are split into unseen (held out by date) and seen.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.errors import ConfigError, MissingDataError

METHODS = ("nearest", "bicubic", "lssr")
#: Optional method: the residual-CNN baseline (``baseline_cnn=``).
CNN = "cnn"
REFERENCE = "vae_truth"
METRICS = ("psnr_rgb", "psnr_ir", "ssim_rgb", "ssim_ir", "ndvi_mse", "sam_deg")
HIGHER_IS_BETTER = {"psnr_rgb": True, "psnr_ir": True, "ssim_rgb": True, "ssim_ir": True,
                    "ndvi_mse": False, "sam_deg": False}


def _is_pairs_store(path: Path) -> bool:
    if not (path / ".zattrs").is_file():
        return False
    return json.loads((path / ".zattrs").read_text()).get("format") == "lssr-pairs"


def prepare_pairs(data: str | Path, workdir: str | Path) -> tuple[str, list[tuple[str, str]], list[str]]:
    """(pairs store, skipped [(item, reason)], notes) for ``data``: a pairs store is used as is;
    a folder of WorldCereal patches is converted into ``workdir/pairs.zarr``."""
    from lssr_ray.data.pairs import convert_worldcereal

    data = Path(data)
    if not data.exists():
        raise MissingDataError(f"--data {data} does not exist (a folder of WorldCereal patches or a pairs .zarr)")
    if _is_pairs_store(data):
        return str(data), [], [f"{data} is a pairs store: used as is"]
    store = Path(workdir) / "pairs.zarr"
    rep = convert_worldcereal(data, store)
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


def _trained_ids(checkpoint: Path) -> set[str] | None:
    from lssr_ray.train.loop import SPLIT_FILE

    f = checkpoint / SPLIT_FILE
    return set(json.loads(f.read_text())["train"]) if f.is_file() else None


def recorded_base(checkpoint: str | Path) -> str:
    """The base URI recorded in a checkpoint; a relative path is taken from the repository root."""
    from lssr_ray.config import REPO_ROOT
    from lssr_ray.model.lssr import CONFIG_NAME

    f = Path(checkpoint) / CONFIG_NAME
    if not f.is_file():
        raise MissingDataError(f"{checkpoint} is not an LSSR checkpoint (no {CONFIG_NAME})")
    uri = json.loads(f.read_text())["base"]["uri"]
    if "://" in uri or Path(uri).is_absolute():
        return uri
    return str(REPO_ROOT / uri)


def _baselines(lr_img: np.ndarray, valid: np.ndarray, scale: int) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    from lssr_ray.model.lssr import postprocess

    t = torch.as_tensor(lr_img)
    bic = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1).numpy()
    near = lr_img.repeat(scale, axis=2).repeat(scale, axis=3)
    return {"nearest": postprocess(near, valid, scale=scale), "bicubic": postprocess(bic, valid, scale=scale)}


def _vae_truth(model, hr: np.ndarray) -> np.ndarray:
    """Truth reflectance (B, 6, H, W) through the VAE (latent mean), back to reflectance."""
    import torch

    from lssr_ray.model.lssr import preprocess
    from lssr_ray.model.normalize import image_to_reflectance

    b = hr.shape[0]
    img = preprocess({"lr": hr, "month": np.ones(b, np.int64)}, scale=1)["lr"]  # NaN-fill + scaling
    x = torch.as_tensor(img)
    x = torch.cat([x[:, :3], x[:, 3:]], 0)
    with torch.inference_mode():
        z = model.vae.encode(x).latent_dist.mean
        rec = model.vae.decode(z).sample.clamp(-1, 1)
    return image_to_reflectance(torch.cat([rec[:b], rec[b:]], 1).numpy())


def evaluate_pairs(
    store: str | Path,
    checkpoint: str | Path,
    *,
    chip_size: int = 16,
    batch_size: int = 4,
    png_dir: str | Path | None = None,
    max_png: int = 12,
    base: str | None = None,
    baseline_cnn: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics per group and method, and per pair, for every pair of ``store``.

    ``chip_size``: 30 m cells per chip edge (3 x chip_size must be a multiple of 24 for the VAE
    and SAR head windows: 8, 16, 24...). ``png_dir``: write up to ``max_png`` comparison PNGs.
    ``base``: frozen base path/URI (default: the one recorded in the checkpoint).
    ``baseline_cnn``: a :class:`lssr_ray.model.baseline.ResidualCNN` folder to score as ``cnn``.
    """
    import torch

    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.model.lssr import LSSRPipeline, postprocess, preprocess
    from lssr_ray.model.metrics import evaluate
    from lssr_ray.train.loop import VAL_SEED

    if chip_size < 1 or (3 * chip_size) % 24:
        raise ConfigError(f"chip_size {chip_size}: 3 x chip_size must be a multiple of 24 (use 8, 16, 24, ...)")
    checkpoint = Path(checkpoint)
    pipe = LSSRPipeline.from_pretrained(checkpoint, base=base or recorded_base(checkpoint))
    scale = pipe.scale
    trained = _trained_ids(checkpoint)
    cnn = None
    if baseline_cnn is not None:
        from lssr_ray.model.baseline import ResidualCNN

        if not (Path(baseline_cnn) / "config.json").is_file():
            raise MissingDataError(f"baseline_cnn {baseline_cnn}: not a ResidualCNN folder (no config.json)")
        cnn = ResidualCNN.from_pretrained(baseline_cnn).eval()
    methods = (*METHODS, CNN) if cnn is not None else METHODS
    ds = PairDataset(store, chip_size=chip_size)
    kinds = [str(x) for x in ds._store()["sensor_pair"].values[ds.indices].tolist()]
    per_pair: list[dict[str, Any]] = []
    n_png = 0
    torch.manual_seed(VAL_SEED)  # the base VAE samples its latent: fix it for repeatable numbers
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        batch = collate(items)
        hr = batch["hr"].astype(np.float32)
        hr_ok = batch["hr_valid"][:, 0] > 0.5
        inputs = preprocess(batch, scale=scale)
        outs = _baselines(inputs["lr"], inputs["valid"], scale)
        outs["lssr"] = pipe(batch)["sr"]
        if cnn is not None:
            with torch.inference_mode():
                outs[CNN] = postprocess(cnn(torch.as_tensor(inputs["lr"])).numpy(), inputs["valid"], scale=scale)
        outs[REFERENCE] = _vae_truth(pipe.model, np.where(hr_ok[:, None], hr, np.nan))
        target = np.where(hr_ok[:, None], hr, np.nan).astype(np.float32)
        for j in range(len(items)):
            i = start + j
            row = {"pair_id": ds.pair_ids[i], "sensor_pair": kinds[i],
                   "clear_fraction": float((np.isfinite(outs["nearest"][j]).all(0) & hr_ok[j]).mean())}
            for m, arr in outs.items():
                # the VAE reference is scored on the same pixels as the methods (clear input too)
                pred = np.where(np.isfinite(outs["nearest"][j:j + 1]), arr[j:j + 1], np.nan) if m == REFERENCE else arr[j:j + 1]
                row[m] = evaluate(torch.as_tensor(pred), torch.as_tensor(target[j:j + 1]))
            per_pair.append(row)
            if png_dir is not None and n_png < max_png and row["clear_fraction"] > 0:
                save_comparison_png(Path(png_dir) / f"{ds.pair_ids[i]}.png", batch["lr"][j], outs["bicubic"][j],
                                    outs["lssr"][j], target[j], title=f"{ds.pair_ids[i]} ({kinds[i]})", scale=scale)
                n_png += 1
    groups = {}
    for name, idx in _groups(kinds, ds.pair_ids, trained):
        rows = [per_pair[i] for i in idx if per_pair[i]["clear_fraction"] > 0]
        groups[name] = {"n_pairs": len(rows), "pair_ids": [r["pair_id"] for r in rows]}
        for m in (*methods, REFERENCE):
            groups[name][m] = {k: float(np.nanmean([r[m][k] for r in rows])) if rows else float("nan")
                               for k in METRICS}
    return {"checkpoint": str(checkpoint), "store": str(store), "chip_size": chip_size,
            "training_split_known": trained is not None, "groups": groups, "pairs": per_pair}


def _rgb(refl: np.ndarray, bands: tuple[int, int, int], hi: float) -> np.ndarray:
    img = np.stack([refl[b] for b in bands], -1) / hi
    img = np.clip(np.nan_to_num(img, nan=0.0), 0, 1)
    return img


def save_comparison_png(path: Path, lr: np.ndarray, bicubic: np.ndarray, lssr: np.ndarray, truth: np.ndarray,
                        *, title: str = "", scale: int = 3) -> Path:
    """Two rows (RGB 0-0.25 and NIR/SWIR1/SWIR2 0-0.5 reflectance) of four panels: 30 m input |
    bicubic | LSSR | Sentinel-2 truth. Arrays are (6, h, w) (input) and (6, 3h, 3w) reflectance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    near = lr.repeat(scale, axis=1).repeat(scale, axis=2)
    panels = [("30 m input", near), ("bicubic", bicubic), ("LSSR", lssr), ("Sentinel-2 truth", truth)]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    for c, (name, arr) in enumerate(panels):
        axes[0, c].imshow(_rgb(arr, (0, 1, 2), 0.25), interpolation="nearest")
        axes[1, c].imshow(_rgb(arr, (3, 4, 5), 0.5), interpolation="nearest")
        axes[0, c].set_title(name)
        for r in range(2):
            axes[r, c].set_axis_off()
    axes[0, 0].text(-0.08, 0.5, "red/green/blue", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.08, 0.5, "nir/swir1/swir2", transform=axes[1, 0].transAxes, rotation=90, va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def format_table(result: dict[str, Any]) -> str:
    """One block per group: metric rows, method columns (the residual CNN when evaluated), and
    LSSR minus bicubic."""
    lines = []
    for name, g in result["groups"].items():
        has_cnn = CNN in g
        lines.append(f"\n{name}: {g['n_pairs']} pairs, {result['chip_size']}x{result['chip_size']} cells "
                     f"at 30 m, clear-sky pixels only")
        lines.append(f"{'metric':>9} {'nearest':>9} {'bicubic':>9} {'LSSR':>9} {'LSSR-bic':>9}   {'VAE(truth)':>10}"
                     + (f" {'res.CNN':>9}" if has_cnn else ""))
        for k in METRICS:
            d = g["lssr"][k] - g["bicubic"][k]
            better = (d > 0) == HIGHER_IS_BETTER[k] and d != 0
            lines.append(f"{k:>9} {g['nearest'][k]:9.4f} {g['bicubic'][k]:9.4f} {g['lssr'][k]:9.4f} "
                         f"{d:+9.4f}{'*' if better else ' '}  {g[REFERENCE][k]:10.4f}"
                         + (f" {g[CNN][k]:9.4f}" if has_cnn else ""))
    lines.append("\n* = LSSR better than bicubic. VAE(truth): the Sentinel-2 truth through the base's VAE, "
                 "the ceiling of any VAE-decoded output. res.CNN: bicubic + residual CNN trained on the same "
                 "pairs and loss (no diffusion prior).")
    return "\n".join(lines)


def evaluate_data(
    data: str | Path,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    chip_size: int = 16,
    max_png: int = 12,
    base: str | None = None,
    workdir: str | Path | None = None,
    baseline_cnn: str | Path | None = None,
) -> dict[str, Any]:
    """Convert ``data`` if needed (into ``workdir/pairs.zarr``, kept, or a temporary folder),
    evaluate, write ``out`` (metrics JSON) and the PNGs."""
    with tempfile.TemporaryDirectory(prefix="lssr-eval-") as tmp:
        store, skipped, notes = prepare_pairs(data, workdir or tmp)
        result = evaluate_pairs(store, checkpoint, chip_size=chip_size, png_dir=png_dir, max_png=max_png, base=base,
                                baseline_cnn=baseline_cnn)
    result.update({"data": str(data), "skipped": [{"item": i, "reason": r} for i, r in skipped], "notes": notes})
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


__all__ = ["CNN", "METHODS", "METRICS", "evaluate_data", "evaluate_pairs", "format_table", "prepare_pairs",
           "save_comparison_png"]
