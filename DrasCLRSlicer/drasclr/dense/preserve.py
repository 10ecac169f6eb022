"""Fine-tuning on a few annotated voxels without forgetting the rest (knowledge preservation).

Every voxel of the case's 1 mm lung grid gets one of three roles:

- **annotated**: corrected (the annotator changed the label) or confirmed (reviewed and accepted as predicted).
  Both are the annotator's labels: cross-entropy on that label, weight 1 per voxel, averaged over the annotated
  voxels of the batch (term weight 1).
- **pseudo-labelled**: every other lung voxel where the parent model is confident (its most likely subtype has
  probability >= ``confidence`` among the four subtypes): cross-entropy to the parent's soft prediction
  (distillation, the parent runs frozen beside the student on the same patches), averaged over those voxels, term
  weight ``pseudo_weight``. A batch holds some 100x more of these than annotated voxels, so each one counts far
  less than an annotated voxel while the parent's knowledge as a whole weighs as much as the corrections.
- **ignored**: outside the lung, and lung voxels where the parent is unsure (there the corrections may generalise).

Patches are centred on annotated voxels (``focus_fraction`` of them) or on random lung voxels elsewhere in the
scan. Normalisation statistics stay frozen (the model runs in eval mode while it learns): a batch of four patches
around one correction must not rewrite the BatchNorm statistics that every other scan depends on. The learning rate
is low, warms up linearly over the first ``warmup`` steps, and only the decoder and the last encoder stages learn
(``freeze="last"``).

A **guard** checks every ``eval_every`` steps, on fixed patches centred on random lung voxels, the agreement
with the parent on the untouched, confident voxels, and the accuracy on the annotated voxels in fixed patches
centred on them. When agreement falls below ``min_agreement`` training stops. The state kept is the one with the
best annotated accuracy among those that passed the guard (the parent itself when none improved on it).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.image import CTImage, resample_to
from ..core.intensity import normalise_hu
from .infer import PATCH, Locator, extract_patches, lung_volume
from .train import IGNORE, augment, set_freeze

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreserveRecipe:
    """The knowledge-preserving recipe; the defaults were tuned on phantom seed 1201 (see docs/guided_correction.md)."""

    lr: float = 5e-4
    warmup: int = 10
    freeze: str = "last"
    batch_size: int = 4
    focus_fraction: float = 0.5
    pseudo_weight: float = 1.0
    confidence: float = 0.8
    min_agreement: float = 0.97
    eval_every: int = 2
    guard_patches: int = 8
    focus_patches: int = 4
    jitter: int = 8

    def card(self) -> dict:
        return {"kind": "knowledge-preserving", "annotated_weight": 1.0, **self.__dict__}


@dataclass
class AnnotatedCase:
    """One case on its 1 mm lung grid: HU ``ct``, annotator ``target`` (``IGNORE`` where not annotated), ``lungs``
    (bool), the ``grid`` and ``locator``, and the flat indices of the annotated voxels (``focus``) and of the other
    lung voxels (``elsewhere``)."""

    ct: np.ndarray
    target: np.ndarray
    lungs: np.ndarray
    grid: CTImage
    locator: Locator
    focus: np.ndarray
    elsewhere: np.ndarray


def prepare_annotated(ct: CTImage, corrected: CTImage, lungs: CTImage, annotated: np.ndarray, locator: Locator,
                      rng: np.random.Generator, per_role: int = 50000) -> AnnotatedCase:
    """Resample a case to its 1 mm lung grid; ``annotated``: boolean mask on ``ct``'s grid."""
    vol = lung_volume(ct, lungs)
    lung = vol.lungs.array > 0
    ann = (resample_to(ct.with_array(annotated.astype(np.uint8)), vol.ct).array > 0) & lung
    sub = resample_to(corrected, vol.ct).array
    ann &= sub > 0
    target = np.where(ann, sub, IGNORE).astype(np.uint8)
    focus, elsewhere = np.flatnonzero(ann), np.flatnonzero(lung & ~ann)
    if not len(elsewhere):
        elsewhere = focus
    pick = [rng.choice(i, min(len(i), per_role), replace=False) for i in (focus, elsewhere)]
    return AnnotatedCase(vol.ct.array.astype(np.int16), target, lung, vol.ct, locator, *pick)


def _patches(case: AnnotatedCase, centres: np.ndarray, rng: np.random.Generator, jitter: int):
    """HU, target, lung and location of patches around flat-index ``centres``."""
    zyx = np.array(np.unravel_index(centres, case.target.shape)).T
    corners = zyx - PATCH // 2 + (rng.integers(-jitter, jitter + 1, zyx.shape) if jitter else 0)
    x = extract_patches(case.ct, corners)
    y = extract_patches(case.target, corners, fill=IGNORE)
    m = extract_patches(case.lungs.view(np.uint8), corners, fill=0) > 0
    loc = np.asarray(case.locator(case.grid.zyx_to_lps(corners + PATCH / 2.0)), np.float32)
    return x, y, m, loc


def _draw(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return idx[rng.integers(len(idx), size=n)]


def _confident(probs: torch.Tensor, confidence: float) -> torch.Tensor:
    """Where the most likely subtype (classes 1–4, renormalised) has probability >= ``confidence``."""
    sub = probs[:, 1:]
    return sub.max(1).values >= confidence * sub.sum(1).clamp_min(1e-8)


def preserve_loss(logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, lungs: torch.Tensor,
                  confidence: float, pseudo_weight: float) -> torch.Tensor:
    """Cross-entropy on the annotated voxels + ``pseudo_weight`` x cross-entropy to the parent's probabilities
    ``teacher`` on the other lung voxels where the parent is confident; each term a mean over its own voxels."""
    logp = F.log_softmax(logits.float(), 1)
    annotated = target != IGNORE
    loss = logits.new_zeros(())
    if annotated.any():
        nll = F.nll_loss(logp, torch.where(annotated, target, 0).long(), reduction="none")
        loss = loss + nll[annotated].mean()
    pseudo = lungs & ~annotated & _confident(teacher, confidence)
    if pseudo.any() and pseudo_weight > 0:
        loss = loss + pseudo_weight * (-(teacher * logp).sum(1))[pseudo].mean()
    return loss


def _decide(probs: torch.Tensor, class_weights) -> torch.Tensor:
    """The subtype (1–4) decision ``argmax w_c p_c``, as :func:`predict` takes it."""
    sub = probs[:, 1:]
    if class_weights is not None:
        sub = sub * torch.tensor(class_weights, dtype=sub.dtype, device=sub.device)[None, :, None, None, None]
    return sub.argmax(1) + 1


@torch.no_grad()
def _probs(model, x: np.ndarray, loc: np.ndarray, device, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        xb = normalise_hu(torch.from_numpy(x[i:i + batch]))[:, None].float().to(device)
        out.append(torch.softmax(model(xb, torch.from_numpy(loc[i:i + batch]).to(device)).float(), 1).cpu())
    return torch.cat(out)


class Guard:
    """Fixed patches elsewhere in the lung (agreement with the parent on untouched, confident voxels) and on the
    annotated voxels (accuracy); the parent's decisions are computed once."""

    def __init__(self, parent, case: AnnotatedCase, recipe: PreserveRecipe, class_weights, device, seed: int):
        rng = np.random.default_rng(seed)
        self.class_weights, self.device = class_weights, device
        self.away = _patches(case, _draw(case.elsewhere, recipe.guard_patches, rng), rng, 0)
        self.near = _patches(case, _draw(case.focus, recipe.focus_patches, rng), rng, 0)
        probs = _probs(parent, self.away[0], self.away[3], device)
        x, y, m, _ = self.away
        t = torch.from_numpy(y)
        self.check = torch.from_numpy(m) & (t == IGNORE) & _confident(probs, recipe.confidence)
        self.parent_labels = _decide(probs, class_weights)

    def __call__(self, model) -> tuple[float, float]:
        """(agreement with the parent on the checked voxels, accuracy on the annotated voxels)."""
        labels = _decide(_probs(model, self.away[0], self.away[3], self.device), self.class_weights)
        agree = float((labels == self.parent_labels)[self.check].float().mean()) if self.check.any() else 1.0
        x, y, _, loc = self.near
        t = torch.from_numpy(y).long()
        ann = t != IGNORE
        pred = _decide(_probs(model, x, loc, self.device), self.class_weights)
        acc = float((pred == t)[ann].float().mean()) if ann.any() else float("nan")
        return agree, acc


def finetune_preserving(model, case: AnnotatedCase, recipe: PreserveRecipe | None = None, *,
                        steps: int = 10_000, max_seconds: float | None = None, device="cpu", seed: int = 0,
                        class_weights=None) -> dict:
    """Fine-tune ``model`` in place on ``case`` with the recipe above; returns a history dict (steps, seconds,
    agreement and annotated accuracy at each check, whether the guard stopped training, the step kept)."""
    recipe = recipe or PreserveRecipe()
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device).eval()
    parent = copy.deepcopy(model).eval()
    for p in parent.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(set_freeze(model, recipe.freeze, recipe.lr), weight_decay=0.0)
    # linear warm-up: Adam's first steps move every weight by about ``lr`` whatever its gradient
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(recipe.warmup, 1)))
    guard = Guard(parent, case, recipe, class_weights, device, seed + 1)
    agree, acc = guard(model)
    history = [{"step": 0, "agreement": agree, "accuracy": acc}]
    best_acc, best_step, best_state = acc, 0, None
    stopped, step = False, 0
    t0 = time.perf_counter()
    n_focus = rng.binomial(recipe.batch_size, recipe.focus_fraction, size=steps)
    for step in range(1, steps + 1):
        centres = np.concatenate([_draw(case.focus, n_focus[step - 1], rng),
                                  _draw(case.elsewhere, recipe.batch_size - n_focus[step - 1], rng)])
        x, y, m, loc = _patches(case, centres, rng, recipe.jitter)
        xb = normalise_hu(augment(torch.from_numpy(x), rng))[:, None].to(device)
        lb = torch.from_numpy(loc).to(device)
        with torch.no_grad():
            teacher = torch.softmax(parent(xb, lb).float(), 1)
        loss = preserve_loss(model(xb, lb), teacher, torch.from_numpy(y).to(device), torch.from_numpy(m).to(device),
                             recipe.confidence, recipe.pseudo_weight)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a batch without annotated or confident voxels has nothing to learn from
            loss.backward()
            opt.step()
        sched.step()
        elapsed = time.perf_counter() - t0
        last = step == steps or (max_seconds is not None and elapsed >= max_seconds)
        if step % recipe.eval_every == 0 or last:
            agree, acc = guard(model)
            history.append({"step": step, "loss": float(loss.item()), "agreement": agree, "accuracy": acc,
                            "seconds": round(elapsed, 1)})
            log.info("progress: finetune step %d loss %.4f agreement %.3f annotated accuracy %.3f", step,
                     loss.item(), agree, acc)
            if agree < recipe.min_agreement:
                log.info("guard: agreement with the parent %.3f < %.3f at step %d; keeping step %d", agree,
                         recipe.min_agreement, step, best_step)
                stopped = True
                break
            if not acc < best_acc:  # ties go to the later state (NaN accuracy: no annotated voxel checked)
                best_acc, best_step = acc, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if last:
            break
    model.load_state_dict(best_state if best_state is not None else parent.state_dict())
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - t0, "kept_step": best_step, "stopped_by_guard": stopped,
            "history": history}


__all__ = ["AnnotatedCase", "Guard", "PreserveRecipe", "finetune_preserving", "preserve_loss", "prepare_annotated"]
