"""How an evaluation result (:func:`lssr_ray.train.evaluate.evaluate_pairs`) is shown: the printed
table, the markdown file written beside the metrics JSON, and the comparison PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.train.protocol import ALL_METRICS, HIGHER_IS_BETTER

_COLUMNS = (("lssr", "LSSR"), ("bicubic", "bicubic"), ("nearest", "nearest"), ("cnn", "res.CNN"),
            ("vae_truth", "VAE ceiling"))
_NOTE = ("Scored: the core of each chip (its halo of real neighbouring 30 m cells was input, not scored), "
         "clear-sky pixels only; *_norm: PSNR after a per-chip per-band affine radiometric fit at 30 m applied "
         "to every method alike. CI: paired bootstrap 95 % interval over chips (seeded). VAE ceiling: the truth "
         "through the base's VAE. rho: Spearman rank correlation of per-pixel uncertainty (spread over "
         "test-time variants) with absolute error; improvement / omission / hallucination: opensr-test "
         "correctness fractions; consistency: mean |PSF-degraded output - 30 m input|.")


def _rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(result["groups"].items())


def _ci(c: dict[str, float]) -> str:
    return f"{c['mean']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"


def _group_lines(name: str, g: dict[str, Any], result: dict[str, Any], *, md: bool) -> list[str]:
    core = result["core_size"]
    head = (f"{name}: n = {g['n_pairs']} chips, core {core}x{core} cells at 30 m "
            f"(input {result['chip_size']}x{result['chip_size']}, halo {result['halo']})")
    if "lssr" not in g:
        qa = "; ".join(f"{pid}: gain {np.round(q['gain'], 2).tolist()}, r {np.round(q['r'], 2).tolist()}"
                       for pid, q in g.get("qa", {}).items())
        return [("### " if md else "\n") + head, "", f"not scored (radiometric QA): {qa}", ""]
    cols = [(k, label) for k, label in _COLUMNS if k in g]
    cis = list(g["ci"])
    lines = [("### " if md else "\n") + head, ""]
    if md:
        lines.append("| metric | " + " | ".join(label for _, label in cols) + " | " + " | ".join(
            f"{c} (95 % CI)" for c in cis) + " |")
        lines.append("|---" * (1 + len(cols) + len(cis)) + "|")
    else:
        lines.append(f"{'metric':>13} " + " ".join(f"{label:>11}" for _, label in cols) + "  "
                     + "  ".join(f"{c + ' (95% CI)':>34}" for c in cis))
    for k in ALL_METRICS:
        vals = [f"{g[m][k]:.4f}" for m, _ in cols]
        ci = []
        for c in cis:
            if k in g["ci"][c]:
                d = g["ci"][c][k]
                better = d["lo"] > 0 if HIGHER_IS_BETTER[k] else d["hi"] < 0
                ci.append(_ci(d) + ("*" if better else " "))
            else:
                ci.append("")
        if md:
            lines.append(f"| {k} | " + " | ".join(vals) + " | " + " | ".join(ci) + " |")
        else:
            lines.append(f"{k:>13} " + " ".join(f"{v:>11}" for v in vals) + "  " + "  ".join(f"{c:>34}" for c in ci))
    if md:
        lines.append("")
    for m, t in g.get("trust", {}).items():
        lines.append(("- " if md else "  ") + f"trust {m}: rho(uncertainty, |error|) {t['spearman_rho']:.3f}, "
                     f"improvement {t['improvement']:.3f}, omission {t['omission']:.3f}, "
                     f"hallucination {t['hallucination']:.3f}, consistency {t['consistency_mae']:.4f}")
    lines.append("")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """One block per group: metric rows, method columns, LSSR - bicubic / LSSR - CNN intervals
    (``*``: the interval excludes zero in LSSR's favour) and the trust-layer line per method."""
    lines = []
    for name, g in _rows(result):
        lines += _group_lines(name, g, result, md=False)
    lines.append(_NOTE)
    return "\n".join(lines)


def to_markdown(result: dict[str, Any]) -> str:
    """The same report as markdown (written beside the metrics JSON)."""
    seen = result.get("seen_locations", {})
    lines = ["# LSSR evaluation", "",
             f"- data: `{result.get('data', result['store'])}`",
             (f"- checkpoint: `{result['checkpoint']}`; base: `{result['base']}`; "
             f"CNN: `{result.get('baseline_cnn')}`"),
             "- locations seen in training / pretraining: " + "; ".join(
                 f"{k}: {'not recorded' if v is None else ', '.join(v) or 'none'}" for k, v in seen.items()),
             f"- variants for the uncertainty: {', '.join(result.get('variants', []))}", ""]
    for name, g in _rows(result):
        lines += _group_lines(name, g, result, md=True)
    lines += [_NOTE, ""]
    return "\n".join(lines)


def _rgb(refl: np.ndarray, bands: tuple[int, int, int], hi: float) -> np.ndarray:
    img = np.stack([refl[b] for b in bands], -1) / hi
    return np.clip(np.nan_to_num(img, nan=0.0), 0, 1)


def save_comparison_png(path: Path, panels: list[tuple[str, np.ndarray]], *, title: str = "") -> Path:
    """Two rows (RGB 0-0.25 and NIR/SWIR1/SWIR2 0-0.5 reflectance) of one panel per (name,
    (6, H, W) reflectance on the 10 m grid), e.g. 30 m input | bicubic | LSSR | CNN | truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6.4), squeeze=False)
    for c, (name, arr) in enumerate(panels):
        axes[0, c].imshow(_rgb(arr, (0, 1, 2), 0.25), interpolation="nearest")
        axes[1, c].imshow(_rgb(arr, (3, 4, 5), 0.5), interpolation="nearest")
        axes[0, c].set_title(name)
        for r in range(2):
            axes[r, c].set_axis_off()
    axes[0, 0].text(-0.08, 0.5, "red/green/blue", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.08, 0.5, "nir/swir1/swir2", transform=axes[1, 0].transAxes, rotation=90, va="center")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


__all__ = ["format_table", "save_comparison_png", "to_markdown"]
