"""LightGBM crop-type classifier over per-pixel features, saved as a folder.

Predictions are WorldCereal crop-type codes (uint16). Output code ``0`` (:data:`NODATA_CODE`)
means "no valid input": pixels whose non-aux features are all NaN are never classified.
A saved model is a folder: ``model.txt`` (LightGBM text model), ``classes.json`` (codes and
names), ``features.json`` (the ordered feature names the model expects) and ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lssr_ray.classify.labels import NODATA_CODE, CropTypeTable, load_croptype_table
from lssr_ray.errors import ConfigError, MissingDataError

__all__ = ["DEFAULT_PARAMS", "CropClassifier"]

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
"""LightGBM parameters; small trees suit patch-sized training sets. ``num_boost_round`` is separate."""

_FILES = ("model.txt", "classes.json", "features.json", "meta.json")


class CropClassifier:
    """Gradient-boosted trees (LightGBM multiclass) mapping feature rows to crop-type codes."""

    def __init__(self, booster: Any, table: CropTypeTable, feature_names: Sequence[str], meta: dict | None = None):
        self.booster = booster
        self.table = table
        self.feature_names = list(feature_names)
        self.meta = dict(meta or {})

    @property
    def codes(self) -> np.ndarray:
        """(K,) uint16 class codes in model output order."""
        return np.asarray(self.table.codes, np.uint16)

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        *,
        feature_names: Sequence[str],
        table: CropTypeTable | None = None,
        class_weight: str | None = "balanced",
        num_boost_round: int = 150,
        params: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> CropClassifier:
        """Train on rows ``X`` (N, F) float32 (NaN = missing) and codes ``y`` (N,) (no 0s).

        ``class_weight="balanced"`` weights each sample by N / (K * n_class) so rare crops count;
        ``None`` weights all samples equally. ``table`` names the codes (default: bundled table).
        """
        import lightgbm as lgb

        X = np.asarray(X, np.float32)
        y = np.asarray(y).astype(np.int64)
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(feature_names):
            raise ConfigError(f"X must be (N, F={len(feature_names)}) with N = len(y), got {X.shape}, {y.shape}")
        if np.any(y == NODATA_CODE):
            raise ConfigError(f"training codes contain {NODATA_CODE} (nodata); select labelled pixels only")
        codes, idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(codes) < 2:
            raise ConfigError(f"need at least 2 classes to train, got codes {codes.tolist()}")
        if class_weight not in ("balanced", None):
            raise ConfigError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
        weight = None
        if class_weight == "balanced":
            weight = (len(y) / (len(codes) * counts))[idx]
        p = {**DEFAULT_PARAMS, **(params or {}), "objective": "multiclass", "num_class": len(codes),
             "seed": seed}
        ds = lgb.Dataset(X, label=idx, weight=weight, feature_name=[_safe(n) for n in feature_names],
                         free_raw_data=True)
        booster = lgb.train(p, ds, num_boost_round=num_boost_round)
        table = (table or load_croptype_table()).subset(codes)
        meta = {"params": p, "num_boost_round": num_boost_round, "class_weight": class_weight,
                "train_counts": {str(int(c)): int(n) for c, n in zip(codes, counts)},
                "nodata": NODATA_CODE, "lightgbm": lgb.__version__}
        return cls(booster, table, feature_names, meta)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, F) rows -> (N, K) class probabilities, columns in :attr:`codes` order."""
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ConfigError(f"X must be (N, {len(self.feature_names)}), got {X.shape}")
        return np.asarray(self.booster.predict(X)).reshape(X.shape[0], -1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, F) rows -> (N,) uint16 codes; rows whose non-aux features are all NaN -> 0."""
        X = np.asarray(X, np.float32)
        out = np.full(X.shape[0], NODATA_CODE, np.uint16)
        ok = self._valid_rows(X)
        if ok.any():
            out[ok] = self.codes[np.argmax(self.predict_proba(X[ok]), axis=1)]
        return out

    def predict_map(self, features: np.ndarray, *, valid: np.ndarray | None = None) -> np.ndarray:
        """(F, H, W) features -> (H, W) uint16 crop_type codes, 0 where input is invalid.

        ``valid`` (H, W) bool optionally restricts which pixels are classified (e.g. a cropland
        or AOI mask); pixels with no finite non-aux feature are nodata regardless.
        """
        f, h, w = features.shape
        X = features.reshape(f, -1).T
        out = self.predict(X).reshape(h, w)
        if valid is not None:
            out[~np.asarray(valid, bool)] = NODATA_CODE
        return out

    def _valid_rows(self, X: np.ndarray) -> np.ndarray:
        cols = [i for i, n in enumerate(self.feature_names) if not n.startswith("aux_")] or list(
            range(X.shape[1])
        )
        return np.isfinite(X[:, cols]).any(axis=1)

    def save(self, folder: str | Path) -> Path:
        """Write the model folder (created if needed) and return its path."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "model.txt"))
        (d / "classes.json").write_text(json.dumps(self.table.to_dict(), indent=1, ensure_ascii=False))
        (d / "features.json").write_text(json.dumps(self.feature_names, indent=1))
        (d / "meta.json").write_text(json.dumps(self.meta, indent=1, default=str))
        return d

    @classmethod
    def load(cls, folder: str | Path) -> CropClassifier:
        """Read a folder written by :meth:`save`."""
        import lightgbm as lgb

        d = Path(folder)
        missing = [n for n in _FILES if not (d / n).is_file()]
        if missing:
            raise MissingDataError(f"model folder {d} lacks {missing}; a saved model has {list(_FILES)}")
        booster = lgb.Booster(model_file=str(d / "model.txt"))
        table = CropTypeTable.from_dict(json.loads((d / "classes.json").read_text()))
        names = json.loads((d / "features.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
        if booster.num_feature() != len(names):
            raise ConfigError(f"{d}: model expects {booster.num_feature()} features, features.json lists {len(names)}")
        return cls(booster, table, names, meta)


def _safe(name: str) -> str:
    # LightGBM rejects some JSON special characters in feature names.
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
