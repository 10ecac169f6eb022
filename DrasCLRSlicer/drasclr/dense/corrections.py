"""Fine-tuning from an annotator's corrections: CT + the model's prediction + the corrected labelmap -> a new
model version, in bounded time, with metrics before and after on the corrected region.

Annotated voxels are the corrected ones (where the corrected map differs from the prediction, inside the lung) and
the *reviewed* ones when a reviewed mask is given (units the annotator looked at and accepted or corrected: their
labels are confirmed, so they count as labels too). Every other lung voxel keeps the parent model's own confident
prediction as a soft pseudo-label, and a guard stops training when the new model drifts from the parent on them
(:mod:`drasclr.dense.preserve`), so the model learns the corrections without forgetting the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core import labels
from ..core.errors import InputError
from ..core.image import CTImage
from ..core.versions import next_version_dir
from .infer import Locator, card_class_weights
from .locate import locator_for
from .predict import predict
from .preserve import PreserveRecipe, finetune_preserving, prepare_annotated
from .store import lineage, load_segmenter, save_segmenter

log = logging.getLogger(__name__)


@dataclass
class CorrectionResult:
    model_dir: Path
    before: dict
    after: dict
    seconds: float
    corrected_voxels: int
    reviewed_voxels: int = 0
    outside_lung_voxels: int = 0


def check_corrections(ct: CTImage, prediction: CTImage, corrected: CTImage, reviewed: CTImage | None = None) -> None:
    if reviewed is not None:
        if not reviewed.same_grid(ct, tol=1e-3):
            raise InputError(f"the reviewed mask is not on the CT's grid (size {reviewed.shape_xyz} vs "
                             f"{ct.shape_xyz}); export it on the CT's geometry")
    for name, img in (("prediction", prediction), ("corrected labelmap", corrected)):
        if not img.same_grid(ct, tol=1e-3):
            raise InputError(f"the {name} is not on the CT's grid (size {img.shape_xyz} vs {ct.shape_xyz}); "
                             "export it on the CT's geometry")
        unknown = sorted(set(np.unique(img.array).tolist()) - set(range(labels.NUM_CLASSES)))
        if unknown:
            raise InputError(f"the {name} has unknown label values {unknown}; expected 0-4 "
                             "(0 outside, 1 normal, 2 CLE, 3 PSE, 4 PLE)")


def _region_metrics(model, ct, lungs, corrected, changed, locator, device, class_weights=None) -> dict:
    """Agreement of ``model`` with the corrected labels on the ``changed`` voxels (the corrected and reviewed ones)
    and per class."""
    region = lungs.with_array((changed > 0).astype(np.uint8))
    pred = predict(ct, region, model, device, locator=locator, tta=False, class_weights=class_weights,
                   margin_mm=16).subtypes.array
    mask = changed > 0
    truth = corrected.array[mask]
    out = {"voxels": int(mask.sum()), "accuracy": float((pred[mask] == truth).mean())}
    for c, name in labels.SUBTYPES.items():
        t, p = truth == c, pred[mask] == c
        denom = t.sum() + p.sum()
        if t.any():
            out[f"dice_{name}"] = float(2 * (t & p).sum() / denom)
    return out


def finetune_from_corrections(model_path: str | Path | None, ct: CTImage, prediction: CTImage,
                              corrected: CTImage, lungs: CTImage | None = None, *, max_seconds: float = 30.0,
                              out_root: str | Path | None = None, device: str | torch.device = "cpu",
                              seed: int = 0, reviewed: CTImage | None = None, locator: Locator | None = None,
                              max_steps: int = 10_000, recipe: PreserveRecipe | None = None) -> CorrectionResult:
    """Fine-tune the model at ``model_path`` on the corrections; writes ``<name>-v<N+1>`` and returns metrics.

    ``lungs``: the lung mask (default: the analysed lung, where the prediction is non-zero). Labels painted
    outside it (a stroke that slipped onto the chest wall) are ignored and counted (``outside_lung_voxels``).
    ``reviewed``: non-zero where the
    annotator reviewed the map (e.g. the review units they visited): those voxels' corrected labels are confirmed
    labels whether changed or accepted as predicted, and training focuses on them with the changed voxels.
    ``locator``: atlas locations (default: registered from ``lungs``; give it when ``lungs`` is a part of the
    lung). Time-bounded by ``max_seconds`` for training; evaluation before/after visits only patches touching the
    corrected (and reviewed) voxels. ``max_steps`` bounds the training steps as well; ``recipe``: the
    knowledge-preserving recipe (:class:`~drasclr.dense.preserve.PreserveRecipe`).
    """
    t0 = time.perf_counter()
    check_corrections(ct, prediction, corrected, reviewed)
    device = torch.device(device)
    model, card, folder = load_segmenter(model_path, device)
    lung_arr = prediction.array > 0 if lungs is None else lungs.array > 0
    lungs = ct.with_array(lung_arr.astype(np.uint8))
    painted = corrected.array > 0
    n_outside = int((painted & ~lung_arr).sum())
    if n_outside:
        log.warning("%d corrected voxels lie outside the analysed lung and are ignored", n_outside)
    changed = (corrected.array != prediction.array) & lung_arr & painted
    confirmed = changed if reviewed is None else changed | ((reviewed.array > 0) & lung_arr & painted)
    n_changed, n_confirmed = int(changed.sum()), int(confirmed.sum())
    if n_confirmed == 0:
        outside = f" ({n_outside} voxels painted outside the lung are ignored)" if n_outside else ""
        raise InputError("the corrected labelmap does not differ from the prediction inside the lung and nothing "
                         f"was reviewed: nothing to learn{outside}")
    rng = np.random.default_rng(seed)
    recipe = recipe or PreserveRecipe()
    if locator is None:
        locator, _ = locator_for(lungs)
    weights = card_class_weights(card)  # the parent's decision weights; the new version keeps them
    before = _region_metrics(model, ct, lungs, corrected, confirmed, locator, device, weights)
    case = prepare_annotated(ct, corrected, lungs, confirmed, locator, rng)
    history = finetune_preserving(model, case, recipe, steps=max_steps, max_seconds=max_seconds, device=device,
                                  seed=seed, class_weights=weights)
    after = _region_metrics(model, ct, lungs, corrected, confirmed, locator, device, weights)
    new_dir = next_version_dir(folder, Path(out_root) if out_root else None)
    keep = ("name", "training", "metrics", "classes", "inference", "validated_spacing_mm")
    new_card = {k: v for k, v in card.items() if k in keep}
    new_card.update({
        "name": card.get("name", folder.name),
        "version": new_dir.name,
        **lineage(card, folder),
        "finetune": {"kind": "corrections", "corrected_voxels": n_changed, "outside_lung_voxels": n_outside,
                     "reviewed_voxels": int(confirmed.sum() - changed.sum()) if reviewed is not None else 0,
                     "recipe": recipe.card(), "steps": history["steps"], "kept_step": history["kept_step"],
                     "stopped_by_guard": history["stopped_by_guard"], "guard": history["history"],
                     "train_seconds": round(history["seconds"], 1),
                     "metrics_before": before, "metrics_after": after},
    })
    save_segmenter(model, new_dir, new_card)
    log.info("corrected region accuracy %.3f -> %.3f; new model %s", before["accuracy"], after["accuracy"], new_dir)
    return CorrectionResult(new_dir, before, after, time.perf_counter() - t0, n_changed,
                            n_confirmed - n_changed if reviewed is not None else 0, n_outside)


__all__ = ["CorrectionResult", "finetune_from_corrections", "check_corrections"]
