"""Training a subtype model on a labelled cohort, end to end: split, per-rank case preparation, training (one
process or DDP under torchrun), calibration on the whole validation volumes, and the model card.

``drasclr finetune cohort`` only parses its options into a :class:`CohortRecipe` and calls :func:`train_cohort`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core import distributed as D
from ..core.progress import progress
from .cohort import disease_burden, find_cases, label_mask, load_case, stratified_split
from .locate import locator_for
from .pseudo import case_meta
from .store import save_segmenter
from .train import CLASS_WEIGHTS, fixed_patches, prepare_case, train_segmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortRecipe:
    """How to train on a cohort (the options of ``drasclr finetune cohort``)."""

    steps: int = 1500
    batch_size: int = 8  # per rank
    lr: float = 1e-3
    freeze: str = "all"
    encoder_lr_scale: float = 1.0
    val_fraction: float = 0.2
    max_seconds: float | None = None
    patience: int = 6
    seed: int = 0
    label_slices: int | None = None
    label_fraction: float | None = None
    amp: bool = True
    mirror: bool = True
    loss_weights: tuple[float, ...] = CLASS_WEIGHTS
    calibrate: bool = True
    save_every: int = 200  # steps between checkpoints (with a checkpoint folder)
    pause_after_seconds: float | None = None  # write a checkpoint and stop (resume later)
    distill: float = 0.0  # weight of the teacher's soft targets (with a teacher; 1: copy the teacher)
    harmonize: str = "off"  # "auto": every case harmonized as analyze harmonizes a scan (drasclr.acquisition)


@dataclass
class CohortResult:
    steps: int
    best_val: float
    world_size: int
    is_main: bool  # only the main rank wrote the model


def train_cohort(model, data: str | Path, out: Path, recipe: CohortRecipe, device, card: dict,
                 checkpoints: Path | None = None, resume: bool = False, teacher=None) -> CohortResult:
    """Train ``model`` on the labelled cases in ``data`` and (on the main rank) write it to ``out`` with ``card``
    completed by the training facts, the validation metric and the calibration. ``device``: the requested device
    (under torchrun each rank takes its own GPU). ``checkpoints``: folder for resumable training state
    (``resume`` continues from it; :class:`~drasclr.dense.checkpoint.TrainingPaused` at a planned pause).
    ``teacher``: a model to distil from (``recipe.distill``, see :mod:`drasclr.dense.train`)."""
    cases = find_cases(data)
    info = D.init_distributed(device)
    try:
        # validation (and calibration) only on truly labelled cases; pseudo-labelled real CTs always train
        metas = [case_meta(c) for c in cases]  # pseudo-labels and sampling weights
        truth = [i for i, m in enumerate(metas) if m.get("labels") != "pseudo"]
        burden = [disease_burden(cases[i]) for i in progress(truth, desc="read labels")]
        val_idx = [truth[j] for j in stratified_split(burden, recipe.val_fraction, recipe.seed)]  # same on all ranks
        train_idx = [i for i in range(len(cases)) if i not in val_idx]
        mine = train_idx[info.rank::info.world_size] if len(train_idx) >= info.world_size else train_idx
        rng = np.random.default_rng(recipe.seed + 7919 * info.rank)
        train, val, val_raw = [], [], []
        for i in progress(sorted(mine + (val_idx if info.is_main else [])), desc="prepare cases"):
            ct, sub, lungs = load_case(cases[i])  # only this rank's cases are read; only their 1 mm crops kept
            ct = harmonized_for_training(ct, lungs, recipe.harmonize)
            locator, _ = locator_for(lungs)
            if i in val_idx:
                val.append(prepare_case(ct, sub, lungs, locator, rng=rng))
                val_raw.append((ct, sub, lungs, locator))
            else:
                labelled = label_mask(lungs, rng, recipe.label_slices, recipe.label_fraction)
                train.append(prepare_case(ct, sub, lungs, locator, labelled=labelled, rng=rng))
                train[-1].weight = float(metas[i].get("sample_weight", 1.0))
        hist = train_segmenter(model, train, fixed_patches(val, 96) if val else None, steps=recipe.steps,
                               batch_size=recipe.batch_size, lr=recipe.lr, freeze=recipe.freeze, device=info.device,
                               seed=recipe.seed, patience=recipe.patience, encoder_lr_scale=recipe.encoder_lr_scale,
                               max_seconds=recipe.max_seconds, amp=recipe.amp, mirror=recipe.mirror,
                               loss_weights=recipe.loss_weights, checkpoints=checkpoints,
                               save_every=recipe.save_every, resume=resume,
                               pause_after_seconds=recipe.pause_after_seconds, teacher=teacher,
                               distill=recipe.distill if teacher is not None else 0.0,
                               fingerprint={"cases": [cases[i].name for i in train_idx],
                                            "val_cases": [cases[i].name for i in val_idx],
                                            "label_slices": recipe.label_slices,
                                            "label_fraction": recipe.label_fraction, "amp": recipe.amp,
                                            "harmonize": recipe.harmonize,
                                            **_architecture_key(model)})
    finally:
        D.cleanup()
    log.info("rank %d: trained %d steps, weights sha256 %s", info.rank, hist["steps"], D.state_digest(model))
    result = CohortResult(hist["steps"], hist["best_val"], info.world_size, info.is_main)
    if not info.is_main:
        return result
    facts = {k: v for k, v in asdict(recipe).items() if k in ("label_slices", "label_fraction", "freeze",
                                                              "batch_size", "lr", "seed", "harmonize")}
    if teacher is not None:
        facts["distill"] = recipe.distill
    card = {**card}
    card["training"] = {**card.get("training", {}), "cases": [cases[i].name for i in train_idx],
                        "val_cases": [cases[i].name for i in val_idx], **facts, "steps": hist["steps"],
                        "seconds": round(hist["seconds"], 1), "sessions": hist["sessions"],
                        "world_size": info.world_size,
                        "global_batch": recipe.batch_size * info.world_size, "amp": hist["amp"],
                        "mirror_augment": recipe.mirror, "loss_weights": list(recipe.loss_weights)}
    card["metrics"] = {**card.get("metrics", {}), "val_patch_macro_dice_disease": hist["best_val"]}
    if val_raw and recipe.calibrate:
        from .calibrate import calibrate_cases

        cal = calibrate_cases(model, val_raw, info.device)
        card["inference"] = cal.card(card["training"]["val_cases"])
        card["metrics"]["val_volume_macro_dice_disease"] = cal.macro_after
    save_segmenter(model, out, card)
    return result


def harmonized_for_training(ct, lungs, mode: str):
    """The case's CT as ``analyze`` would hand it to the model: ``mode`` "auto" harmonizes it
    (:func:`drasclr.acquisition.harmonize.harmonize`, the case's labelled lung as the lung mask), so that the model
    learns the look it is shown at inference; "off": the CT as stored."""
    if mode == "off":
        return ct
    from ..acquisition.harmonize import harmonize

    return harmonize(ct, lungs, mode)[0]


def _architecture_key(model) -> dict:
    """What of the architecture a checkpoint must match beyond its tensor names (none for a 3³ full-res stage,
    so older checkpoints still resume)."""
    kernel = getattr(model, "full_res_kernel", 3)
    return {} if kernel == 3 else {"full_res_kernel": kernel}
