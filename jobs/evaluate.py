"""Evaluate an LSSR checkpoint on held-out locations against bicubic, nearest, a residual CNN and
the VAE ceiling (docs/TRAINING.md "Protocol").

    python jobs/evaluate.py --data data/samples/worldcereal_hesbaye_monthly_2021 \\
        --checkpoint models/lssr-adapters-cpu-v3 --baseline-cnn models/baseline-cnn

``--data``: a folder of WorldCereal-format patches (any number, any subset of layers; what cannot
give pairs is listed as skipped, with the reason) or a pairs store (``*.zarr``, docs/PAIRS.md).
Refuses (exit 2) a location the checkpoint, the CNN or the base saw, unless ``--allow-seen``
(rows then say "seen (not an evaluation)"). Prints a table per location and pair kind with n,
bootstrap intervals of LSSR - bicubic and LSSR - CNN and the trust-layer numbers, and writes the
metrics JSON, a markdown table beside it and comparison PNGs (30 m input | bicubic | LSSR | CNN |
truth, scored core only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from lssr_ray.config import DEFAULT_CHECKPOINT_DIR, portable_ref
    from lssr_ray.train.evaluate import DEFAULT_HALO

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/samples/worldcereal_hesbaye_monthly_2021",
                   help="WorldCereal patch folder or pairs .zarr (default: the held-out Hesbaye monthly cube)")
    p.add_argument("--checkpoint", default=portable_ref(DEFAULT_CHECKPOINT_DIR), help="LSSR checkpoint folder")
    p.add_argument("--out", default="out/eval/metrics.json", help="metrics JSON to write (markdown beside it)")
    p.add_argument("--png-dir", help="comparison PNGs (default: <out folder>/png)")
    p.add_argument("--max-png", type=int, default=12, help="at most this many PNGs")
    p.add_argument("--chip-size", type=int, default=16,
                   help="input chip edge in 30 m cells, halo included (3 x chip a multiple of 24: 8, 16, 24)")
    p.add_argument("--halo", type=int, default=DEFAULT_HALO,
                   help="30 m cells of real neighbours around the scored core (core = chip - 2 halo)")
    p.add_argument("--base", help="frozen base folder/URI (default: the one recorded in the checkpoint)")
    p.add_argument("--baseline-cnn", default="auto",
                   help="residual-CNN baseline folder to add as a column; 'auto' (default): models/baseline-cnn "
                        "if present; 'none': no column")
    p.add_argument("--allow-seen", action="store_true",
                   help="score locations a model trained or was pretrained on, labelled 'seen (not an evaluation)'")
    p.add_argument("--variants", help="comma-separated test-time variants of the uncertainty "
                                      "(default: identity,flip_x,rot90,no_sar)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lssr_ray.config import BASELINE_CNN_DIR
    from lssr_ray.errors import LssrError, one_line
    from lssr_ray.train.eval_report import format_table
    from lssr_ray.train.evaluate import evaluate_data

    cnn = args.baseline_cnn
    if cnn == "auto":
        cnn = BASELINE_CNN_DIR if (BASELINE_CNN_DIR / "config.json").is_file() else None
    elif cnn == "none":
        cnn = None
    out = Path(args.out)
    png = Path(args.png_dir) if args.png_dir else out.parent / "png"
    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    t0 = time.perf_counter()
    try:
        res = evaluate_data(args.data, args.checkpoint, out=out, png_dir=png, chip_size=args.chip_size,
                            halo=args.halo, max_png=args.max_png, base=args.base, baseline_cnn=cnn,
                            allow_seen=args.allow_seen, variants=variants)
    except LssrError as e:  # a refusal (ProtocolError: ground a model saw) or bad input: one line, exit 2
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"data {args.data}  checkpoint {args.checkpoint}  base {res['base']}  CNN {res['baseline_cnn']}")
    if res["skipped"]:
        print(f"skipped {len(res['skipped'])} items (not evaluable):")
        for s in res["skipped"]:
            print(f"  {s['item']}: {s['reason']}")
    for who, locs in res["seen_locations"].items():
        if locs is None:
            print(f"note: the {who} records no training/pretraining locations: its overlap with this data is unknown")
    print(format_table(res))
    print(f"\nmetrics -> {out} (+ {out.with_suffix('.md').name})   PNGs -> {png}   ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
