"""Classification metrics (numpy) and the feature-source comparison table.

All metrics take crop-type codes. A labelled pixel predicted as nodata (0, no valid input)
counts as an error in overall accuracy and recall; it appears in no confusion-matrix column.
Macro F1 is the unweighted mean F1 over the classes present in ``y_true``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lssr_ray.classify.labels import NODATA_CODE, CropTypeTable, load_croptype_table
from lssr_ray.errors import ConfigError

__all__ = [
    "classification_scores",
    "compare_sources",
    "confusion_matrix",
    "format_comparison",
    "repeat_comparison",
]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, labels: Sequence[int]) -> np.ndarray:
    """(K, K) int64 counts: row = true code, column = predicted code, in ``labels`` order.

    Pairs whose true or predicted code is not in ``labels`` are not counted.
    """
    yt, yp = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if yt.shape != yp.shape:
        raise ConfigError(f"y_true and y_pred differ in length: {yt.shape} vs {yp.shape}")
    labels = np.asarray(list(labels))
    k = len(labels)
    lut = {int(c): i for i, c in enumerate(labels)}
    ti = np.array([lut.get(int(c), -1) for c in yt], np.int64)
    pi = np.array([lut.get(int(c), -1) for c in yp], np.int64)
    ok = (ti >= 0) & (pi >= 0)
    return np.bincount(ti[ok] * k + pi[ok], minlength=k * k).reshape(k, k)


def classification_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    labels: Sequence[int] | None = None,
    table: CropTypeTable | None = None,
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, macro F1, overall accuracy and confusion matrix.

    ``labels`` (default: codes in ``y_true`` or ``y_pred``, nodata excluded) fixes the class order.
    Returns a JSON-able dict: ``overall_accuracy``, ``macro_f1``, ``n_pixels``, ``n_unclassified``,
    ``per_class`` {code: {name, precision, recall, f1, support}}, ``labels``, ``confusion``.
    F1 of a class with no true and no predicted pixels is reported as None.
    """
    yt, yp = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if yt.shape != yp.shape or yt.size == 0:
        raise ConfigError(f"need equally long, non-empty y_true/y_pred, got {yt.shape}, {yp.shape}")
    if np.any(yt == NODATA_CODE):
        raise ConfigError("y_true contains nodata (0); evaluate labelled pixels only")
    table = table or load_croptype_table()
    if labels is None:
        labels = sorted({int(c) for c in np.unique(np.concatenate([yt, yp]))} - {NODATA_CODE})
    labels = [int(c) for c in labels]
    cm = confusion_matrix(yt, yp, labels=labels)
    support = np.array([(yt == c).sum() for c in labels])
    predicted = np.array([(yp == c).sum() for c in labels])
    tp = np.diag(cm)
    per_class = {}
    f1s = []
    for i, c in enumerate(labels):
        prec = tp[i] / predicted[i] if predicted[i] else 0.0
        rec = tp[i] / support[i] if support[i] else 0.0
        f1 = (2 * prec * rec / (prec + rec) if prec + rec else 0.0) if support[i] or predicted[i] else None
        if support[i]:
            f1s.append(f1)
        per_class[str(c)] = {"name": table.name(c), "precision": float(prec), "recall": float(rec),
                             "f1": None if f1 is None else float(f1), "support": int(support[i])}
    return {
        "overall_accuracy": float(np.mean(yt == yp)),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "n_pixels": int(yt.size),
        "n_unclassified": int((yp == NODATA_CODE).sum()),
        "per_class": per_class,
        "labels": labels,
        "confusion": cm.tolist(),
    }


def _fit_score(Xtr, ytr, Xte, yte, names, codes, table, seed, class_weight, num_boost_round):
    from lssr_ray.classify.model import CropClassifier

    keep = np.isfinite(Xtr).any(axis=1)
    clf = CropClassifier.fit(Xtr[keep], ytr[keep], feature_names=names, table=table,
                             class_weight=class_weight, num_boost_round=num_boost_round, seed=seed)
    scores = classification_scores(yte, clf.predict(Xte), labels=codes, table=table)
    scores.update(n_train=int(keep.sum()), n_features=len(names))
    return scores, clf


def compare_sources(
    feature_sets: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    labels: np.ndarray,
    split: Any,
    *,
    table: CropTypeTable | None = None,
    seed: int = 0,
    class_weight: str | None = "balanced",
    num_boost_round: int = 150,
    return_models: bool = False,
    executor: str = "local",
) -> dict[str, Any]:
    """Train one classifier per feature source on the same split and score it on the same pixels.

    ``feature_sets`` maps source name -> (features (F, H, W), names); ``labels`` (H, W) codes;
    ``split`` a :class:`~lssr_ray.classify.split.SpatialSplit`. Training uses the train pixels
    with at least one finite feature; testing uses every test pixel (no valid input = error).
    The class list is every labelled code; classes with no test pixels get F1 None (never
    predicted) or 0 (predicted wrongly) and do not enter macro F1.
    ``executor="ray"`` trains the sources as parallel Ray tasks (1 CPU each; joins the running
    cluster or starts a local one), for large regions; ``"local"`` trains them one after another.
    Returns {source: scores (see :func:`classification_scores`) + ``n_train``, ``n_features``};
    with ``return_models`` also {"_models": {source: CropClassifier}}.
    """
    from lssr_ray.classify.features import pixel_matrix

    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    table = table or load_croptype_table()
    if not split.test.any() or not split.train.any():
        raise ConfigError("the split has an empty train or test side; use more data or another seed")
    # every class the models know, so predictions of train-only classes show up as errors
    codes = sorted({int(c) for c in np.unique(labels[split.test | split.train])})
    jobs = {}
    for source, (feats, names) in feature_sets.items():
        if feats.shape[1:] != labels.shape:
            raise ConfigError(f"{source}: features {feats.shape} do not match labels {labels.shape}")
        jobs[source] = (pixel_matrix(feats, split.train), labels[split.train],
                        pixel_matrix(feats, split.test), labels[split.test], list(names))
    common = (codes, table, seed, class_weight, num_boost_round)
    if executor == "ray":
        import ray
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(_fit_score)
        refs = {s: task.remote(*j, *common) for s, j in jobs.items()}
        done = {s: ray.get(r) for s, r in refs.items()}
    else:
        done = {s: _fit_score(*j, *common) for s, j in jobs.items()}
    out: dict[str, Any] = {s: v[0] for s, v in done.items()}
    if return_models:
        out["_models"] = {s: v[1] for s, v in done.items()}
    return out


def repeat_comparison(
    feature_sets: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    labels: np.ndarray,
    seeds: Sequence[int],
    *,
    test_fraction: float = 0.3,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`compare_sources` over several field splits (one per seed): mean and std per source.

    With few fields one split is noisy; this gives the spread. Returns {source: {"macro_f1_mean",
    "macro_f1_std", "oa_mean", "oa_std", "macro_f1": [...], "oa": [...], "test_pixels": [...]}}.
    """
    from lssr_ray.classify.split import spatial_split

    runs = []
    for s in seeds:
        sp = spatial_split(labels, test_fraction, seed=int(s))
        runs.append(compare_sources(feature_sets, labels, sp, seed=int(s), **kwargs))
    out = {}
    for src in feature_sets:
        f1 = [r[src]["macro_f1"] for r in runs]
        oa = [r[src]["overall_accuracy"] for r in runs]
        out[src] = {"macro_f1_mean": float(np.mean(f1)), "macro_f1_std": float(np.std(f1)),
                    "oa_mean": float(np.mean(oa)), "oa_std": float(np.std(oa)),
                    "macro_f1": f1, "oa": oa, "test_pixels": [r[src]["n_pixels"] for r in runs],
                    "seeds": [int(s) for s in seeds]}
    return out


def format_comparison(results: Mapping[str, Any], *, split_summary: Mapping[str, Any] | None = None) -> str:
    """Markdown table: one row per source with test pixels, OA, macro F1 and per-class F1."""
    rows = {k: v for k, v in results.items() if not k.startswith("_")}
    if not rows:
        raise ConfigError("no results to format")
    first = next(iter(rows.values()))
    codes = [str(c) for c in first["labels"]]
    head = ["source", "train px", "test px", "OA", "macro F1"] + [
        f"F1 {first['per_class'][c]['name']} ({c})" for c in codes
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for src, r in rows.items():
        # "-": the class has no test pixels (train-only), so it has no F1 here
        f1 = [r["per_class"][c]["f1"] if r["per_class"][c]["support"] else None for c in codes]
        cells = [src, str(r.get("n_train", "")), str(r["n_pixels"]), f"{r['overall_accuracy']:.3f}",
                 f"{r['macro_f1']:.3f}"] + ["-" if v is None else f"{v:.3f}" for v in f1]
        lines.append("| " + " | ".join(cells) + " |")
    if split_summary:
        pc = split_summary.get("per_class", {})
        fields = ", ".join(f"{c}: {v['test_fields']} test / {v['train_fields']} train fields"
                           for c, v in pc.items())
        lines.append("")
        lines.append(f"Split: {fields}; train-only codes (one field, not evaluated): "
                     f"{list(split_summary.get('train_only_codes', []))}")
    return "\n".join(lines)
