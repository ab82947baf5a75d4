"""Train the plain residual-CNN baseline (lssr_ray.model.baseline.ResidualCNN) on the LSSR pairs.

Same data protocol as LSSR training (lssr_ray.train.data.make_batches with the TrainConfig of
``--config``, default configs/train_cpu.yaml: synthetic S2deg-S2 pairs for training, the real
L8-S2 pairs for validation, synthetic pairs within holdout_days of a validation date held out),
same loss (LSSRLoss), single process, plain torch. Then evaluates nearest / bicubic / the CNN on
every pair of the store, the same 16-cell centre crops and clear masks as jobs/evaluate.py, and
writes ``<out>/metrics.json`` and ``<out>/train_pairs.json`` next to the weights.

    python scripts/train_baseline_cnn.py --out models/baseline-cnn --steps 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def evaluate_store(model, store: str, *, chip_size: int = 16, batch_size: int = 8,
                   trained: set[str] | None = None) -> dict:
    """Group means (real / synthetic unseen / synthetic seen) of nearest, bicubic and the CNN."""
    import torch

    from lssr_ray.data.batch import postprocess, preprocess
    from lssr_ray.data.pair_dataset import PairDataset, collate
    from lssr_ray.model.metrics import evaluate
    from lssr_ray.train.evaluate import METRICS, _baselines, _groups

    ds = PairDataset(store, chip_size=chip_size)
    kinds = [str(x) for x in ds._store()["sensor_pair"].values[ds.indices].tolist()]
    rows = []
    model.eval()
    for start in range(0, len(ds), batch_size):
        batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        hr_ok = batch["hr_valid"][:, 0] > 0.5
        inp = preprocess(batch, scale=3)
        outs = _baselines(inp["lr"], inp["valid"], 3)
        with torch.inference_mode():
            outs["cnn"] = postprocess(model(torch.as_tensor(inp["lr"])).numpy(), inp["valid"], scale=3)
        target = np.where(hr_ok[:, None], batch["hr"], np.nan).astype(np.float32)
        for j in range(len(hr_ok)):
            i = start + j
            row = {"pair_id": ds.pair_ids[i], "clear": float((np.isfinite(outs["nearest"][j]).all(0) & hr_ok[j]).mean())}
            for m, a in outs.items():
                row[m] = evaluate(torch.as_tensor(a[j:j + 1]), torch.as_tensor(target[j:j + 1]))
            rows.append(row)
    groups = {}
    for name, idx in _groups(kinds, ds.pair_ids, trained):
        rs = [rows[i] for i in idx if rows[i]["clear"] > 0]
        groups[name] = {"n_pairs": len(rs)}
        for m in ("nearest", "bicubic", "cnn"):
            groups[name][m] = {k: float(np.nanmean([r[m][k] for r in rs])) for k in METRICS}
    return groups


def main() -> None:
    from lssr_ray.config import BASELINE_CNN_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "train_cpu.yaml"), help="TrainConfig YAML (data protocol)")
    ap.add_argument("--out", default=str(BASELINE_CNN_DIR))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=100)
    args = ap.parse_args()

    import dataclasses

    import torch

    from lssr_ray.config import TrainConfig, load_yaml
    from lssr_ray.data.batch import preprocess
    from lssr_ray.model.baseline import ResidualCNN
    from lssr_ray.model.losses import LSSRLoss
    from lssr_ray.train.data import make_batches

    torch.manual_seed(0)
    data = load_yaml(args.config)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig.from_dict({**{k: v for k, v in data.items() if k in names},
                                 "batch_size": args.batch_size, "num_workers": 1})
    train_it, val_fn, split = make_batches(cfg, rank=0, world_size=1)
    print(f"train {len(split['train'])} pairs, val {len(split['val'])}, held out {len(split['held_out'])}")
    model = ResidualCNN(channels=args.channels, num_blocks=args.blocks)
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    # the loss models/baseline-cnn was trained with (before issue 11 rebalanced the defaults)
    recipe = {"fft_weight": 1.0, "ndvi_weight": 20.0, "fft_log": False, "ndvi_min_sum": 0.0}
    loss_fn = LSSRLoss(**{**recipe, **cfg.loss})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    t0 = time.time()
    log = []

    def val() -> float:
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for b in val_fn():
                x = torch.as_tensor(preprocess(b, scale=3)["lr"])
                loss, _ = loss_fn(model(x), torch.as_tensor(b["hr"]), torch.as_tensor(b["hr_valid"]))
                tot, n = tot + float(loss) * len(x), n + len(x)
        model.train()
        return tot / max(n, 1)

    model.train()
    for step in range(1, args.steps + 1):
        b = next(train_it)
        x = torch.as_tensor(preprocess(b, scale=3)["lr"])
        loss, terms = loss_fn(model(x), torch.as_tensor(b["hr"]), torch.as_tensor(b["hr_valid"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.val_every == 0 or step == args.steps:
            v = val()
            log.append({"step": step, "train_loss": terms["total"], "val_loss": v, "s": round(time.time() - t0, 1)})
            print(log[-1], flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    (out / "train_pairs.json").write_text(json.dumps(split, indent=1) + "\n")
    groups = evaluate_store(model, cfg.pairs, chip_size=16, trained=set(split["train"]))
    res = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "train_seconds": round(time.time() - t0),
           "log": log, "groups": groups}
    (out / "metrics.json").write_text(json.dumps(res, indent=1) + "\n")
    for name, g in groups.items():
        print(f"\n{name}: {g['n_pairs']} pairs")
        for k in g["bicubic"]:
            print(f"{k:>9} nearest {g['nearest'][k]:8.4f} bicubic {g['bicubic'][k]:8.4f} cnn {g['cnn'][k]:8.4f}")


if __name__ == "__main__":
    main()
