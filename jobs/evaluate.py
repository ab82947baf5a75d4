"""Evaluate an LSSR checkpoint against bicubic and nearest upsampling.

    python jobs/evaluate.py --data data/samples --checkpoint models/lssr-adapters-cpu --out out/eval/metrics.json

``--data``: a folder of WorldCereal-format patches (any number, any subset of layers; what cannot
give pairs is listed as skipped, with the reason) or a pairs store (``*.zarr``, docs/PAIRS.md).
Prints a table per group (real L8-S2 pairs, synthetic degraded-S2 pairs seen / not seen in
training), writes the metrics JSON and comparison PNGs (30 m input | bicubic | LSSR | truth).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/samples", help="WorldCereal patch folder or pairs .zarr (default data/samples)")
    p.add_argument("--checkpoint", default="models/lssr-adapters-cpu", help="LSSR checkpoint folder")
    p.add_argument("--out", default="out/eval/metrics.json", help="metrics JSON to write")
    p.add_argument("--png-dir", help="comparison PNGs (default: <out folder>/png)")
    p.add_argument("--max-png", type=int, default=12, help="at most this many PNGs")
    p.add_argument("--chip-size", type=int, default=16,
                   help="chip edge in 30 m cells; stored 20-cell chips are centre-cropped (16) or padded (24)")
    p.add_argument("--base", help="frozen base folder/URI (default: the one recorded in the checkpoint)")
    p.add_argument("--baseline-cnn", default="auto",
                   help="residual-CNN baseline folder to add as a column; 'auto' (default): models/baseline-cnn "
                        "if present; 'none': no column")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lssr_ray.train.evaluate import evaluate_data, format_table

    cnn = args.baseline_cnn
    if cnn == "auto":
        from lssr_ray.config import REPO_ROOT

        cnn = REPO_ROOT / "models" / "baseline-cnn"
        cnn = cnn if (cnn / "config.json").is_file() else None
    elif cnn == "none":
        cnn = None
    out = Path(args.out)
    png = Path(args.png_dir) if args.png_dir else out.parent / "png"
    t0 = time.perf_counter()
    res = evaluate_data(args.data, args.checkpoint, out=out, png_dir=png, chip_size=args.chip_size,
                        max_png=args.max_png, base=args.base, baseline_cnn=cnn)
    print(f"data {args.data}  checkpoint {args.checkpoint}")
    if res["skipped"]:
        print(f"skipped {len(res['skipped'])} items (not evaluable):")
        for s in res["skipped"]:
            print(f"  {s['item']}: {s['reason']}")
    if not res["training_split_known"]:
        print("note: the checkpoint has no train_pairs.json: which synthetic pairs it trained on is unknown")
    print(format_table(res))
    print(f"\nmetrics -> {out}   PNGs -> {png}   ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
