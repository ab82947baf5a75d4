"""Evaluate an LSSR checkpoint on held-out locations against bicubic, nearest, a residual CNN and
the VAE ceiling (docs/TRAINING.md "Protocol").

    lssr-evaluate --data data/samples/worldcereal_hesbaye_monthly_2021 \\
        --checkpoint models/lssr-adapters-cpu-v3 --baseline-cnn models/baseline-cnn

--data: a folder of WorldCereal-format patches (any number, any subset of layers; what cannot
give pairs is listed as skipped, with the reason) or a pairs store (*.zarr, docs/PAIRS.md).
Refuses (exit 2) a location the checkpoint, the CNN or the base saw, unless --allow-seen
(rows then say "seen (not an evaluation)"). Prints a table per location and pair kind with n,
bootstrap intervals of LSSR - bicubic and LSSR - CNN and the trust-layer numbers, and writes the
metrics JSON, a markdown table beside it and comparison PNGs (30 m input | bicubic | LSSR | CNN |
truth, scored core only).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lssr_ray.cli.args import add_config_args, config_from_args, configure_logging
from lssr_ray.config import BASELINE_CNN_DIR, DEFAULT_CHECKPOINT_DIR, portable_ref
from lssr_ray.errors import LssrError, one_line
from lssr_ray.train.evaluate import DEFAULT_HALO


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run (``lssr-evaluate``)."""

    data: str = "data/samples/worldcereal_hesbaye_monthly_2021"
    """WorldCereal patch folder or pairs .zarr (by default the held-out Hesbaye monthly cube)."""
    checkpoint: str = portable_ref(DEFAULT_CHECKPOINT_DIR)
    """LSSR checkpoint folder."""
    out: str = "out/eval/metrics.json"
    """Metrics JSON to write (the markdown table goes beside it)."""
    png_dir: str | None = None
    """Folder of the comparison PNGs; default <out folder>/png."""
    max_png: int = 12
    """At most this many PNGs."""
    chip_size: int = 16
    """Input chip edge in 30 m cells, halo included (3 x chip a multiple of 24: 8, 16, 24)."""
    halo: int = DEFAULT_HALO
    """30 m cells of real neighbours around the scored core (core = chip - 2 halo)."""
    base: str | None = None
    """Frozen base folder/URI; default: the one recorded in the checkpoint."""
    baseline_cnn: str = "auto"
    """Residual-CNN baseline folder added as a column; auto: models/baseline-cnn if present; none: no column."""
    allow_seen: bool = False
    """Score locations a model trained or was pretrained on, labelled 'seen (not an evaluation)'."""
    variants: tuple[str, ...] | None = None
    """Comma-separated test-time variants of the uncertainty; default identity,flip_x,rot90,no_sar."""

    def baseline_cnn_dir(self) -> Path | None:
        """The CNN folder to compare with, or None (``auto`` finds the bundled one if present)."""
        if self.baseline_cnn == "none":
            return None
        if self.baseline_cnn == "auto":
            return BASELINE_CNN_DIR if (BASELINE_CNN_DIR / "config.json").is_file() else None
        return Path(self.baseline_cnn)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, EvalConfig)
    p.add_argument("--debug", action="store_true", help="debug log messages")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.debug)
    from lssr_ray.train.eval_report import format_table
    from lssr_ray.train.evaluate import evaluate_data

    t0 = time.perf_counter()
    try:
        cfg = config_from_args(args, EvalConfig)
        out = Path(cfg.out)
        png = Path(cfg.png_dir) if cfg.png_dir else out.parent / "png"
        res = evaluate_data(cfg.data, cfg.checkpoint, out=out, png_dir=png, chip_size=cfg.chip_size,
                            halo=cfg.halo, max_png=cfg.max_png, base=cfg.base, baseline_cnn=cfg.baseline_cnn_dir(),
                            allow_seen=cfg.allow_seen, variants=cfg.variants)
    except LssrError as e:  # a refusal (ProtocolError: ground a model saw) or bad input: one line, exit 2
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"data {cfg.data}  checkpoint {cfg.checkpoint}  base {res['base']}  CNN {res['baseline_cnn']}")
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
