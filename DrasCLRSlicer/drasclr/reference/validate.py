"""Cross-validation of the local-histogram classifier on labelled patches (stratified k-fold).

The CIP patches carry no subject identifiers, so patches of one subject can fall on both sides of a split: the
figures are optimistic for a new patient.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedKFold

from .. import labels
from .features import HistogramSpec, patch_features
from .knn import CLASSES, LocalHistogramKNN


def cross_validate(patches: np.ndarray, subtypes: np.ndarray, spec: HistogramSpec, k: int = 5,
                   pse_dense_frac: float | None = 0.28, folds: int = 5, seed: int = 0,
                   strata: np.ndarray | None = None, pse_needs_emphysema: bool = True) -> dict:
    """Stratified ``folds``-fold CV. ``strata``: finer labels to stratify on (e.g. CLE grades); default the
    subtypes. Returns balanced accuracy, per-class recall and the confusion matrix (rows truth, columns
    prediction, in ``CLASSES`` order), and the out-of-fold predictions."""
    subtypes = np.asarray(subtypes, np.uint8)
    feats, dense = patch_features(patches, spec)
    pred = np.zeros_like(subtypes)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(feats, subtypes if strata is None else strata):
        clf = LocalHistogramKNN(spec, feats[train], subtypes[train], k=k, pse_dense_frac=pse_dense_frac,
                                pse_needs_emphysema=pse_needs_emphysema)
        pred[test] = clf.predict(feats[test], dense[test])
    cm = confusion_matrix(subtypes, pred, labels=list(CLASSES))
    recall = {labels.SUBTYPES[c]: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(CLASSES)}
    return {"balanced_accuracy": float(balanced_accuracy_score(subtypes, pred)), "recall": recall,
            "confusion": cm.tolist(), "classes": [labels.SUBTYPES[c] for c in CLASSES], "folds": folds,
            "seed": seed, "n": int(len(subtypes)), "predictions": pred}
