"""Per-class decision weights fitted on whole validation volumes (prior-shift correction).

Training draws patches class-balanced, so the network's probabilities carry the training priors (a quarter of
the patches centred on each subtype), not the priors of a real lung (mostly normal). Taking the plain argmax
over whole lungs therefore mis-sizes the subtypes. The decision rule ``argmax_c w_c p_c`` with weights fitted
to maximise macro Dice over CLE/PSE/PLE on held-out whole volumes corrects this. The weights are stored in the
model card (``inference.class_weights``, classes 1–4, normal = 1) and applied by ``drasclr analyze``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..core import labels
from ..core.image import CTImage, resample_to
from .infer import Locator
from .predict import predict
from .scores import confusion_matrix, dice_from_confusion
from .train import DISEASE

log = logging.getLogger(__name__)
SUBTYPES = np.arange(1, labels.NUM_CLASSES)  # the classes a lung voxel can take


@dataclass
class Calibration:
    weights: list[float]  # classes 1..4 (normal first, fixed at 1)
    dice_before: dict[str, float]
    dice_after: dict[str, float]
    macro_before: float
    macro_after: float
    voxels: int

    def card(self, cases: list[str]) -> dict:
        return {"class_weights": [round(w, 4) for w in self.weights], "calibrated_on": cases,
                "voxels": self.voxels, "val_volume_macro_dice_before": round(self.macro_before, 4),
                "val_volume_macro_dice_after": round(self.macro_after, 4),
                "val_volume_dice_before": self.dice_before, "val_volume_dice_after": self.dice_after}


def case_probabilities(model, ct: CTImage, subtypes: CTImage, lungs: CTImage, locator: Locator, device,
                       max_voxels: int = 400_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Whole-volume subtype probabilities ``(4, N)`` float16 (classes 1–4) and truth ``(N,)`` for up to
    ``max_voxels`` lung voxels drawn uniformly (so the class mix is the lung's own) on the 1 mm grid."""
    pred = predict(ct, lungs, model, device, locator=locator, tta=False)
    probs = pred.probabilities.array
    truth = resample_to(subtypes, pred.probabilities.grid).array
    inside = np.flatnonzero((pred.lungs.array > 0) & (truth > 0))
    if len(inside) > max_voxels:
        inside = np.sort(np.random.default_rng(seed).choice(inside, max_voxels, replace=False))
    p = probs.reshape(probs.shape[0], -1)[1:, inside].astype(np.float16)
    return p, truth.reshape(-1)[inside].astype(np.uint8)


def weighted_labels(p: np.ndarray, weights) -> np.ndarray:
    """``(4, N)`` probabilities of classes 1–4 and their weights -> labels ``(N,)`` in 1–4."""
    w = np.asarray(weights, np.float32)[:, None]
    return (np.argmax(p.astype(np.float32) * w, axis=0) + 1).astype(np.uint8)


def _dice(probs: list[np.ndarray], truths: list[np.ndarray], weights) -> tuple[float, dict[str, float]]:
    """Pooled Dice of the classes present in truth, and their macro mean over the disease classes."""
    cm = sum(confusion_matrix(weighted_labels(p, weights), t) for p, t in zip(probs, truths))
    per_class = dice_from_confusion(cm, SUBTYPES)
    dice = {labels.SUBTYPES[c]: per_class[c] for c in SUBTYPES if cm[c].sum()}
    disease = [dice[labels.SUBTYPES[c]] for c in DISEASE if labels.SUBTYPES[c] in dice]
    return (float(np.mean(disease)) if disease else float("nan")), dice


def fit_class_weights(probs: list[np.ndarray], truths: list[np.ndarray], rounds: int = 3,
                      grid: np.ndarray | None = None) -> Calibration:
    """Coordinate search (log-spaced grid, ``rounds`` sweeps over CLE, PSE, PLE) for the weights maximising pooled
    macro Dice over the disease classes present; normal keeps weight 1. Never worse than the plain argmax."""
    grid = np.exp(np.linspace(-3.0, 3.0, 61)) if grid is None else np.asarray(grid)
    w = np.ones(len(SUBTYPES))
    before, dice_before = _dice(probs, truths, w)
    if np.isnan(before):  # no disease in the validation volumes: nothing to fit
        return Calibration(w.tolist(), dice_before, dice_before, before, before, int(sum(map(len, truths))))
    best = before
    for _ in range(rounds):
        changed = False
        for i in range(1, len(SUBTYPES)):
            for g in grid:
                trial = w.copy()
                trial[i] = g
                score = _dice(probs, truths, trial)[0]
                if score > best + 1e-6:
                    best, w, changed = score, trial, True
        if not changed:
            break
    after, dice_after = _dice(probs, truths, w)
    log.info("class weights %s: validation macro Dice %.3f -> %.3f", np.round(w, 3).tolist(), before, after)
    return Calibration([float(x) for x in w], dice_before, dice_after, before, after, int(sum(map(len, truths))))


def calibrate_cases(model, cases, device="cpu", max_voxels: int = 400_000) -> Calibration:
    """Fit the decision weights of ``model`` on whole volumes. ``cases``: ``(ct, subtypes, lungs, locator)``
    tuples (truth lung = ``subtypes > 0``)."""
    probs, truths = [], []
    for i, (ct, sub, lungs, locator) in enumerate(cases):
        p, t = case_probabilities(model, ct, sub, lungs, locator, device, max_voxels, seed=i)
        probs.append(p)
        truths.append(t)
    return fit_class_weights(probs, truths)
