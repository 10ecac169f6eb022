"""Cross-validation of the local-histogram classifier on labelled patches (stratified k-fold, or given splits).

The CIP patches carry no subject identifiers, so patches of one subject can fall on both sides of a split: the
figures are optimistic for a new patient. ``augment`` adds perturbed copies of the training fold's patches to its
references (drasclr.reference.perturb); ``test_kinds`` scores the test fold under perturbations too.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedKFold

from ..core import labels
from .features import HistogramSpec, patch_features
from .knn import CLASSES, LocalHistogramKNN
from .perturb import perturb


def augmented(patches: np.ndarray, subtypes: np.ndarray, augment=(), seed: int = 0):
    """``patches`` and their perturbed copies (one per kind in ``augment``), with the repeated labels."""
    rng = np.random.default_rng(seed)
    stack = [np.asarray(patches, np.float32)] + [perturb(patches, kind, rng) for kind in augment]
    return np.concatenate(stack), np.tile(np.asarray(subtypes, np.uint8), len(stack))


def scores(subtypes: np.ndarray, pred: np.ndarray) -> dict:
    """Balanced accuracy, per-class recall and confusion (rows truth, columns prediction, ``CLASSES`` order)."""
    cm = confusion_matrix(subtypes, pred, labels=list(CLASSES))
    recall = {labels.SUBTYPES[c]: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(CLASSES)}
    return {"balanced_accuracy": float(balanced_accuracy_score(subtypes, pred)), "recall": recall,
            "confusion": cm.tolist(), "classes": [labels.SUBTYPES[c] for c in CLASSES]}


def cross_validate(patches: np.ndarray, subtypes: np.ndarray, spec: HistogramSpec, k: int = 5,
                   pse_dense_frac: float | None = 0.28, folds: int = 5, seed: int = 0,
                   strata: np.ndarray | None = None, pse_needs_emphysema: bool = True, augment=(),
                   test_kinds=None, splits=None) -> dict:
    """Stratified ``folds``-fold CV. ``strata``: finer labels to stratify on (e.g. CLE grades); default the
    subtypes. ``splits``: (train, test) index pairs instead (e.g. held out by acquisition). Returns balanced
    accuracy, per-class recall and the confusion matrix, and the out-of-fold predictions; with ``test_kinds``
    (perturbation names) a dict of those per kind instead."""
    subtypes = np.asarray(subtypes, np.uint8)
    kinds = ("clean",) if test_kinds is None else tuple(test_kinds)
    pred = {kind: np.zeros_like(subtypes) for kind in kinds}
    if splits is None:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            patches, subtypes if strata is None else strata)
    for i, (train, test) in enumerate(splits):
        train_p, train_y = augmented(patches[train], subtypes[train], augment, seed + i)
        feats, _ = patch_features(train_p, spec)
        clf = LocalHistogramKNN(spec, feats, train_y, k=k, pse_dense_frac=pse_dense_frac,
                                pse_needs_emphysema=pse_needs_emphysema)
        for kind in kinds:
            f, dense = patch_features(perturb(patches[test], kind, np.random.default_rng(1000 + i)), spec)
            pred[kind][test] = clf.predict(f, dense)
    out = {kind: {**scores(subtypes, p), "folds": folds, "seed": seed, "n": int(len(subtypes)), "predictions": p}
           for kind, p in pred.items()}
    return out["clean"] if test_kinds is None else out
